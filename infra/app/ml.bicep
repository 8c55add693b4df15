// Azure ML side, deployed into the workspace's resource group once the workspace exists (new: workspace.bicep;
// or an existing one by name): a CPU cluster of Reflex's own (named from the resource token in main.bicep, so
// no compute Reflex did not create is ever redefined) that scales to zero; the
// identity-based datastores Reflex names in its settings; the training environment; the workspace's Event Grid
// system topic; and the Function App identity's roles on the workspace.

param tags object = {}

param workspaceName string

param computeName string
param computeVmSize string
param computeMaxNodes int

@description('Reflex storage account holding the data, scoring and output containers the datastores point at.')
param storageName string
param dataContainerName string
param scoringContainerName string
param outputContainerName string
param dataDatastoreName string
param scoringDatastoreName string
param outputDatastoreName string

param trainingEnvironmentName string
param trainingEnvironmentVersion string
param trainingImage string

param appPrincipalId string
@description('Object id of the person running azd (AZURE_PRINCIPAL_ID); empty: no grant for local runs.')
param deployerPrincipalId string = ''
param deployerPrincipalType string = 'User'

var roles = {
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121' // AzureML Data Scientist
  monitoringReader: '43d0d8ad-25c7-4714-9337-8ba259a9fe05' // Monitoring Reader
}

// ------------------------------------------------------------------------------------- new or existing alike

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource compute 'Microsoft.MachineLearningServices/workspaces/computes@2024-10-01' = {
  parent: workspace
  name: computeName
  location: workspace.location
  tags: union(tags, { 'reflex.managed': 'true' })
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    computeType: 'AmlCompute'
    disableLocalAuth: true
    properties: {
      vmSize: computeVmSize
      vmPriority: 'Dedicated'
      osType: 'Linux'
      enableNodePublicIp: true
      remoteLoginPortPublicAccess: 'Disabled'
      scaleSettings: {
        // Zero nodes at rest: an idle cluster costs nothing; the first job waits a few minutes for a node.
        minNodeCount: 0
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT120S'
      }
    }
  }
}

// Credential-less datastores: whoever reads through them (the job's compute identity, the workspace identity
// for previews) uses its own Entra ID role on the container (rbac.bicep).
resource dataDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' = {
  parent: workspace
  name: dataDatastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageName
    containerName: dataContainerName
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: {
      credentialsType: 'None'
    }
  }
}

resource scoringDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' = {
  parent: workspace
  name: scoringDatastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageName
    containerName: scoringContainerName
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: {
      credentialsType: 'None'
    }
  }
}

resource outputDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' = {
  parent: workspace
  name: outputDatastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageName
    containerName: outputContainerName
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: {
      credentialsType: 'None'
    }
  }
}

// The pinned environment of the training command job (REFLEX_TRAINING_ENVIRONMENT = azureml:<name>:<version>).
// Changing the image or the conda file means a new version: environment versions are immutable.
resource trainingEnvironment 'Microsoft.MachineLearningServices/workspaces/environments/versions@2024-10-01' = {
  name: '${workspaceName}/${trainingEnvironmentName}/${trainingEnvironmentVersion}'
  properties: {
    description: 'Reflex training: scikit-learn, pandas, pyarrow and MLflow for jobs/train/train.py.'
    image: trainingImage
    osType: 'Linux'
    condaFile: loadTextContent('train-conda.yml')
  }
}

// ModelRegistered, RunCompleted and RunStatusChanged of this workspace. Its subscriptions are in
// subscriptions.bicep (they need the eventgrid_extension key, which exists only after the code is deployed).
resource workspaceTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${workspaceName}-events'
  location: workspace.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

// ------------------------------------------------------------------------------------------ roles on the workspace

// Jobs, models, online and batch endpoints and deployments: Data Scientist allows all workspace actions except
// creating/deleting compute and changing the workspace itself, and Reflex creates neither (the cluster is here).
resource appDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appPrincipalId, roles.azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Online endpoint metrics (request count, errors, latency) that gate each rollout step; endpoints are child
// resources of the workspace, so this scope covers them and nothing else.
resource appMonitoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appPrincipalId, roles.monitoringReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The person running azd registers the training code asset (postdeploy hook) and watches jobs in the studio.
resource deployerDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(workspace.id, deployerPrincipalId, roles.azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

output workspaceName string = workspaceName
output workspaceId string = workspace.id
output workspacePrincipalId string = workspace.identity.principalId
output computePrincipalId string = compute.identity.principalId
output systemTopicName string = workspaceTopic.name
output systemTopicPrincipalId string = workspaceTopic.identity.principalId
