// A new Azure ML workspace with what it requires: a Key Vault (RBAC, purge protection) and its own storage account.
// main.bicep deploys this module only when no existing workspace is named. Private networking is out of scope for
// this template (README, "Networking").
//
// The workspace's own storage keeps shared keys, and its system datastores use them (systemDatastoresAuthMode
// 'accesskey'). Azure ML documents a workspace whose storage has shared keys off as preview, "not recommended
// for production workloads", and lists extra requirements exactly where Reflex works (how-to-disable-local-auth-
// storage, "Scenarios for role assignments"): a model as a job output needs a user-assigned identity on the compute
// cluster with Storage Blob Data Contributor, parallel (batch) jobs need Storage Table and Queue Data Contributor,
// and "model package scenarios have known issues". Reflex's training jobs output MLflow models and its batch
// scoring is a parallel job, so it stays on the generally available path here. Reflex's own account (storage.bicep:
// batches, records, outputs, dead letters) keeps shared keys off: its datastores are identity-based.

param location string
param tags object = {}
param workspaceName string
param keyVaultName string
param workspaceStorageName string
param appInsightsId string


resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109:no VNet in this template: the Function App, Event Grid and Azure ML reach it over its public endpoint, Entra ID only
  //checkov:skip=CKV_AZURE_189:no VNet in this template: the Function App, Event Grid and Azure ML reach it over its public endpoint, Entra ID only
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource workspaceStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:no VNet in this template: the Function App, Event Grid and Azure ML reach it over its public endpoint, Entra ID only
  //checkov:skip=CKV_AZURE_59:no VNet in this template: the Function App, Event Grid and Azure ML reach it over its public endpoint, Entra ID only
  //checkov:skip=CKV_AZURE_206:LRS deploys in every region; the workspace's own storage holds snapshots and logs, not source data
  //checkov:skip=CKV_AZURE_33:its queues are Azure ML's own parallel-job bookkeeping, diagnosed through the job logs
  //checkov:skip=CKV_AZURE_43:checkov reads the parameter's symbol; main.bicep passes 'stml' + uniqueString(), 17 lower-case characters
  name: workspaceStorageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    // Kept on deliberately (header comment): Azure ML's system datastores authenticate with the account key.
    allowSharedKeyAccess: true
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = {
  //checkov:skip=CKV_AZURE_243:no VNet in this template: the Function App, Event Grid and Azure ML reach it over its public endpoint, Entra ID only
  name: workspaceName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  properties: {
    friendlyName: workspaceName
    keyVault: keyVault.id
    storageAccount: workspaceStorage.id
    applicationInsights: appInsightsId
    // The generally available mode: system datastores (workspaceblobstore: code snapshots, job outputs, models)
    // use the account key kept in the workspace's Key Vault (header comment).
    systemDatastoresAuthMode: 'accesskey'
    publicNetworkAccess: 'Enabled'
    v1LegacyMode: false
  }
}

output name string = workspace.name
output storageName string = workspaceStorage.name
