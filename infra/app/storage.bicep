// The app's storage account: the Functions host's own storage (deployment package, locks, keys) and Reflex's
// containers (data, scoring, state, outputs, dead letters).
// Shared keys are off: every client, the host included, connects with Microsoft Entra ID.
// The storage account's Event Grid system topic is declared here; its BlobCreated subscriptions point at the
// Event Grid triggers' webhook endpoint, whose key exists only after the code is deployed (subscriptions.bicep).

@description('Storage account name (3-24 lower-case letters and digits).')
param name string
param location string
param tags object = {}

@description('Container the Flex Consumption platform reads the deployment package from.')
param deploymentContainerName string

@description('Containers Reflex uses, by purpose.')
param dataContainerName string
param scoringContainerName string
param stateContainerName string
param outputContainerName string
param deadLetterContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:no VNet in this template: the Function App, Event Grid and Azure ML reach it over its public endpoint, Entra ID only
  //checkov:skip=CKV_AZURE_59:no VNet in this template: the Function App, Event Grid and Azure ML reach it over its public endpoint, Entra ID only
  //checkov:skip=CKV_AZURE_206:LRS deploys in every Flex Consumption region; use Standard_GZRS where data must outlive a region
  //checkov:skip=CKV_AZURE_33:no queue of this account is used: blob intake is an Event Grid trigger, the host keeps blobs only
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // Event Grid delivers dead letters and the Flex platform reads the package as trusted Azure services;
      // the app itself has no VNet in this template, so the account stays reachable over its public endpoint.
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The host's own containers are created here so its role can be scoped to them (it would otherwise create them).
resource hostsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'azure-webjobs-hosts'
  properties: {
    publicAccess: 'None'
  }
}

resource secretsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'azure-webjobs-secrets'
  properties: {
    publicAccess: 'None'
  }
}

resource dataContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: dataContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource scoringContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: scoringContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource outputContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: outputContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// BlobCreated events of this account. The system-assigned identity writes dead letters (shared keys are off).
resource storageTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${name}-events'
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output systemTopicName string = storageTopic.name
output systemTopicPrincipalId string = storageTopic.identity.principalId
