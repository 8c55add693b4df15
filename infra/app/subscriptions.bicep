// The Event Grid subscriptions that deliver to the functions, deployed after the code by
// infra/scripts/subscribe.sh (azd postdeploy hook) into the app's resource group. They cannot be part of
// `azd provision`: each endpoint carries a host system key (blobs_extension for Event Grid-source blob triggers,
// eventgrid_extension for Event Grid triggers), and those keys exist only once the deployed functions have started.
// Being a deployment, re-running it updates the subscriptions in place: safe to run any number of times.

@description('Resource id of the Function App; its host keys are read with listKeys at deployment time.')
param functionAppId string
param functionAppHostName string

param storageId string
param storageSystemTopicName string
param dataContainerName string
param scoringContainerName string
param deadLetterContainerName string

param workspaceResourceGroup string
param workspaceSystemTopicName string

var hostKeys = listKeys('${functionAppId}/host/default', '2023-12-01').systemKeys
var blobsWebhook = 'https://${functionAppHostName}/runtime/webhooks/blobs'

resource storageTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: storageSystemTopicName
}

// Training data: on_data_blob is a blob trigger with source EventGrid on %REFLEX_DATA_CONTAINER%.
resource dataBlobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: storageTopic
  name: 'reflex-on-data-blob'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${blobsWebhook}?functionName=Host.Functions.on_data_blob&code=${hostKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${dataContainerName}/blobs/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storageId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

// Data to score: on_scoring_blob is a blob trigger with source EventGrid on %REFLEX_SCORING_CONTAINER%.
resource scoringBlobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: storageTopic
  name: 'reflex-on-scoring-blob'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${blobsWebhook}?functionName=Host.Functions.on_scoring_blob&code=${hostKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${scoringContainerName}/blobs/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storageId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

// The workspace's system topic may live in another resource group (an existing workspace).
module workspaceSubscriptions 'workspace-subscriptions.bicep' = {
  name: 'reflex-workspace-subscriptions'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    systemTopicName: workspaceSystemTopicName
    eventGridKey: hostKeys.eventgrid_extension
    functionAppHostName: functionAppHostName
    storageId: storageId
    deadLetterContainerName: deadLetterContainerName
  }
}
