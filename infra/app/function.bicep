// The Function App on Flex Consumption (FC1, Python 3.11), running as the one user-assigned identity.
// App settings are exactly the ones shared/core/settings.py reads plus the host's own identity-based storage
// connection (tests/test_infra.py checks both ways). Flex Consumption takes the runtime from functionAppConfig,
// so FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION are deliberately absent.

param planName string
param appName string
param location string
param tags object = {}

param identityId string
param identityClientId string

param storageBlobEndpoint string
param deploymentContainerName string

param appInsightsConnectionString string

@description('Instances the app may scale out to, and memory per instance.')
param maximumInstanceCount int = 40
param instanceMemoryMB int = 2048

@description('Reflex settings that name Azure resources created by this template.')
param workspaceSubscriptionId string
param workspaceResourceGroup string
param workspaceName string
param computeName string
@description('Derived from the resource token in main.bicep: endpoint names must be unique within a region.')
param modelName string
param onlineEndpointName string
param batchEndpointName string
param topicEndpoint string
param dataContainerName string
param scoringContainerName string
param stateContainerName string
param outputContainerName string
param dataDatastoreName string
param scoringDatastoreName string
param outputDatastoreName string
param trainingEnvironment string
param trainingCode string

@description('NCRONTAB schedules the timer triggers resolve from %SETTING% (the host needs them set explicitly).')
param sweepSchedule string = '0 */1 * * * *'
param reconcileSchedule string = '0 */1 * * * *'
param healthSchedule string = '0 */5 * * * *'
param driftSchedule string = '0 0 * * * *'
param retrainSchedule string = '0 0 3 * * 0'
param batchSchedule string = '0 0 2 * * *'
param ledgerIndexSchedule string = '0 */5 * * * *'

// Written as one object so the set of names is the whole truth: a setting not listed here does not exist.
var appSettings = {
  // --- the host's storage connection: identity-based, no key (shared keys are off on the account). Blobs only:
  // with no blob trigger the host uses no queue (blob intake is an Event Grid trigger).
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // --- identity and telemetry
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  // --- platform
  REFLEX_PLATFORM: 'azureml'
  AZUREML_SUBSCRIPTION_ID: workspaceSubscriptionId
  AZUREML_RESOURCE_GROUP: workspaceResourceGroup
  AZUREML_WORKSPACE: workspaceName
  REFLEX_TRAINING_COMPUTE: computeName
  REFLEX_BATCH_COMPUTE: computeName
  REFLEX_MODEL_NAME: modelName
  REFLEX_ENDPOINTS: '${modelName}=${onlineEndpointName}'
  REFLEX_BATCH_ENDPOINT: batchEndpointName
  REFLEX_TRAINING_ENVIRONMENT: trainingEnvironment
  REFLEX_TRAINING_CODE: trainingCode
  // --- storage names (the BlobCreated subscriptions filter on the same containers)
  REFLEX_DATA_CONTAINER: dataContainerName
  REFLEX_SCORING_CONTAINER: scoringContainerName
  REFLEX_STATE_CONTAINER: stateContainerName
  REFLEX_OUTPUT_CONTAINER: outputContainerName
  REFLEX_DATA_DATASTORE: dataDatastoreName
  REFLEX_SCORING_DATASTORE: scoringDatastoreName
  REFLEX_OUTPUT_DATASTORE: outputDatastoreName
  // --- outbound events
  REFLEX_EVENTGRID_TOPIC_ENDPOINT: topicEndpoint
  // --- timer schedules (%SETTING% in the timer triggers)
  REFLEX_SWEEP_SCHEDULE: sweepSchedule
  REFLEX_RECONCILE_SCHEDULE: reconcileSchedule
  REFLEX_HEALTH_SCHEDULE: healthSchedule
  REFLEX_DRIFT_SCHEDULE: driftSchedule
  REFLEX_RETRAIN_SCHEDULE: retrainSchedule
  REFLEX_BATCH_SCHEDULE: batchSchedule
  REFLEX_LEDGER_INDEX_SCHEDULE: ledgerIndexSchedule
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy exists in few regions; Event Grid redelivers and reactions are idempotent
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:Event Grid delivers to the functions' webhook endpoints over the public endpoint (keyed)
  //checkov:skip=CKV_AZURE_17:Event Grid presents no client certificate; its webhooks authenticate with the extension key
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero on events; there is no fixed instance count to fail over
  //checkov:skip=CKV_AZURE_213:Reflex serves no HTTP API to probe; the health_check timer watches what it runs
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'reflex' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
