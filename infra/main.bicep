// Reflex on Azure: `azd up` provisions everything here, deploys the app, then runs scripts/subscribe.sh
// (postdeploy) to create the Event Grid subscriptions to the functions (app/subscriptions.bicep).
//
//   resource group   rg-<env>
//   identity         one user-assigned identity the app runs as                     app/identity.bicep
//   monitoring       Log Analytics + Application Insights                           app/monitoring.bicep
//   storage          host storage + Reflex containers + dead letters, keys off      app/storage.bicep
//                    and the account's Event Grid system topic
//   topic            custom Event Grid topic for Reflex.* events                    app/topic.bicep
//   function app     Flex Consumption (FC1), Python 3.11                            app/function.bicep
//   azure ml         workspace (new, or existing by parameter),                    app/workspace.bicep
//                    a cluster of Reflex's own at 0 nodes,                          app/ml.bicep
//                    datastores, training environment, the workspace system topic
//   roles            least-privilege data roles                                     app/rbac.bicep, app/ml.bicep
//   alerts           action group (when an email is given), log search alert rules,  app/alerts.bicep
//                    and the Reflex workbook (app/workbook.json)
targetScope = 'subscription'

@minLength(1)
@maxLength(32)
@description('azd environment name; names and tags derive from it.')
param environmentName string

@minLength(1)
@description('Region of every new resource (Flex Consumption must be available there).')
param location string

@description('Object id of the person running azd (set by azd as AZURE_PRINCIPAL_ID); empty: no personal grants.')
param principalId string = ''
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Name of an existing Azure ML workspace to use; empty: create a new one.')
param existingWorkspaceName string = ''
@description('Resource group of that existing workspace (same subscription); empty: the new resource group.')
param existingWorkspaceResourceGroup string = ''

@description('Compute cluster for training and batch scoring (zero nodes when idle); empty: rfx<token>-cpu, a name of Reflex\'s own, so an existing workspace\'s computes are never redefined.')
param computeName string = ''
param computeVmSize string = 'Standard_DS3_v2'
@minValue(1)
param computeMaxNodes int = 2

@description('Registered model that training produces and the online endpoint serves (REFLEX_MODEL_NAME).')
param modelName string = 'reflex-model'

@description('Containers and datastores (defaults match shared/core/settings.py).')
param dataContainerName string = 'reflex-data'
param scoringContainerName string = 'reflex-scoring'
param stateContainerName string = 'reflex-state'
param outputContainerName string = 'reflex-outputs'
param deadLetterContainerName string = 'reflex-deadletter'
param dataDatastoreName string = 'reflexdata'
param scoringDatastoreName string = 'reflexscoring'
param outputDatastoreName string = 'reflexoutputs'

@description('Training environment and code asset (the code asset is registered by the postdeploy hook).')
param trainingEnvironmentName string = 'reflex-train'
param trainingEnvironmentVersion string = '1'
param trainingImage string = 'mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04'
param trainingCodeName string = 'reflex-train-code'
param trainingCodeVersion string = '1'

@description('Email address alerts go to (azd env set REFLEX_ALERT_EMAIL ...); empty: no action group, the alerts only show in Azure Monitor.')
param alertEmail string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var createWorkspace = empty(existingWorkspaceName)
var workspaceName = createWorkspace ? 'mlw-${resourceToken}' : existingWorkspaceName
var workspaceResourceGroupName = createWorkspace || empty(existingWorkspaceResourceGroup) ? rg.name : existingWorkspaceResourceGroup
var workspaceStorageName = 'stml${resourceToken}'
var appName = 'func-${resourceToken}'
// Online and batch endpoint names must be unique within an Azure region ("Your endpoint name must be unique in
// the Azure region", how-to-deploy-online-endpoints; "A batch endpoint's name needs to be unique in each region
// since the name is used to construct the invocation URI", how-to-use-batch-model-deployments), so the defaults
// of shared/core/settings.py (reflex-endpoint, reflex-batch) would collide for a second adopter: derive them from the
// resource token. Both fit the endpoint rule (a letter first, 3-32 letters, digits, hyphens).
var onlineEndpointName = 'reflex-${resourceToken}'
var batchEndpointName = 'reflex-batch-${resourceToken}'
// A compute PUT "will overwrite a compute if it exists" (REST Compute - Create Or Update), and compute names are
// unique across a region's computes (3-24 characters, a letter first, a hyphen followed by a letter later:
// how-to-create-attach-compute-cluster): so Reflex creates its own cluster, named from the token, and never
// declares one it did not create (an existing workspace's cpu-cluster stays untouched).
var clusterName = empty(computeName) ? 'rfx${resourceToken}-cpu' : computeName
var deploymentContainerName = 'app-package-${take(appName, 32)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    appInsightsName: monitoring.outputs.appInsightsName
    alertEmail: alertEmail
    namePrefix: 'reflex-${resourceToken}'
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    dataContainerName: dataContainerName
    scoringContainerName: scoringContainerName
    stateContainerName: stateContainerName
    outputContainerName: outputContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module topic 'app/topic.bicep' = {
  name: 'topic'
  scope: rg
  params: {
    name: 'evgt-${resourceToken}'
    location: location
    tags: tags
  }
}

module newWorkspace 'app/workspace.bicep' = if (createWorkspace) {
  name: 'workspace'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: workspaceName
    keyVaultName: 'kv-${resourceToken}'
    workspaceStorageName: workspaceStorageName
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

module ml 'app/ml.bicep' = {
  name: 'ml'
  scope: resourceGroup(workspaceResourceGroupName)
  params: {
    tags: tags
    workspaceName: workspaceName
    computeName: clusterName
    computeVmSize: computeVmSize
    computeMaxNodes: computeMaxNodes
    storageName: storage.outputs.name
    dataContainerName: dataContainerName
    scoringContainerName: scoringContainerName
    outputContainerName: outputContainerName
    dataDatastoreName: dataDatastoreName
    scoringDatastoreName: scoringDatastoreName
    outputDatastoreName: outputDatastoreName
    trainingEnvironmentName: trainingEnvironmentName
    trainingEnvironmentVersion: trainingEnvironmentVersion
    trainingImage: trainingImage
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
  dependsOn: [
    newWorkspace
  ]
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    dataContainerName: dataContainerName
    scoringContainerName: scoringContainerName
    stateContainerName: stateContainerName
    outputContainerName: outputContainerName
    deadLetterContainerName: deadLetterContainerName
    topicName: topic.outputs.name
    appPrincipalId: identity.outputs.principalId
    computePrincipalId: ml.outputs.computePrincipalId
    workspacePrincipalId: ml.outputs.workspacePrincipalId
    storageTopicPrincipalId: storage.outputs.systemTopicPrincipalId
    workspaceTopicPrincipalId: ml.outputs.systemTopicPrincipalId
    reflexTopicPrincipalId: topic.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module function 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    planName: 'plan-${resourceToken}'
    appName: appName
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.connectionString
    workspaceSubscriptionId: subscription().subscriptionId
    workspaceResourceGroup: workspaceResourceGroupName
    workspaceName: workspaceName
    computeName: clusterName
    modelName: modelName
    onlineEndpointName: onlineEndpointName
    batchEndpointName: batchEndpointName
    topicEndpoint: topic.outputs.endpoint
    dataContainerName: dataContainerName
    scoringContainerName: scoringContainerName
    stateContainerName: stateContainerName
    outputContainerName: outputContainerName
    dataDatastoreName: dataDatastoreName
    scoringDatastoreName: scoringDatastoreName
    outputDatastoreName: outputDatastoreName
    trainingEnvironment: 'azureml:${trainingEnvironmentName}:${trainingEnvironmentVersion}'
    trainingCode: 'azureml:${trainingCodeName}:${trainingCodeVersion}'
  }
  // The host must not start before it may read its own storage.
  dependsOn: [
    rbac
  ]
}

// Read by scripts/subscribe.sh and the README's commands (azd writes outputs into the environment).
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = function.outputs.name
output AZURE_FUNCTION_APP_ID string = function.outputs.id
output AZURE_FUNCTION_APP_HOST string = function.outputs.defaultHostName
output AZURE_STORAGE_ACCOUNT_ID string = storage.outputs.id
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_SYSTEM_TOPIC string = storage.outputs.systemTopicName
output AZUREML_WORKSPACE string = workspaceName
output AZUREML_RESOURCE_GROUP string = workspaceResourceGroupName
output AZUREML_SYSTEM_TOPIC string = ml.outputs.systemTopicName
output AZURE_EVENTGRID_TOPIC_NAME string = topic.outputs.name
output AZUREML_COMPUTE string = clusterName
output AZUREML_ONLINE_ENDPOINT string = onlineEndpointName
output AZUREML_BATCH_ENDPOINT string = batchEndpointName
output REFLEX_DATA_CONTAINER string = dataContainerName
output REFLEX_SCORING_CONTAINER string = scoringContainerName
output REFLEX_DEADLETTER_CONTAINER string = deadLetterContainerName
output REFLEX_TRAINING_CODE_NAME string = trainingCodeName
output REFLEX_TRAINING_CODE_VERSION string = trainingCodeVersion
output AZURE_APPINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output REFLEX_WORKBOOK_ID string = alerts.outputs.workbookId
