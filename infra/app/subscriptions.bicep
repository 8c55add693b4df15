// The Event Grid subscriptions that deliver to the functions, deployed after the code by
// infra/scripts/subscribe.sh (azd postdeploy hook) into the app's resource group. They cannot be part of
// `azd provision`: each endpoint carries the host's eventgrid_extension system key, which exists only once the
// deployed functions have started. Being a deployment, re-running it updates the subscriptions in place: safe to
// run any number of times.
//
// Every subscription here and in workspace-subscriptions.bicep has the same delivery policy: a WebHook to the Event Grid trigger's endpoint `runtime/webhooks/eventgrid?functionName=<f>&code=<key>`
// (Functions docs, "Event Grid trigger", create a subscription), one event per request, 30 attempts over 24 h,
// then a dead letter in the dead-letter container written with the system topic's own identity.

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

@description('The custom topic Reflex publishes Reflex.* events to (app resource group).')
param reflexTopicName string

var hostKeys = listKeys('${functionAppId}/host/default', '2023-12-01').systemKeys
var eventGridWebhook = 'https://${functionAppHostName}/runtime/webhooks/eventgrid'

// Only the calls that complete a blob: "If you want to ensure that the Microsoft.Storage.BlobCreated event is
// triggered only when a Block Blob is completely committed, filter the event for the CopyBlob, PutBlob,
// PutBlockList or FlushWithClose REST API calls" (learn.microsoft.com azure/storage/blobs/storage-blob-event-
// overview, "Practices for consuming events"). A PutBlock alone (an upload still in progress) never reaches Reflex.
var blobCompletingApis = [
  'PutBlob'
  'PutBlockList'
  'CopyBlob'
  'FlushWithClose'
]

resource storageTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: storageSystemTopicName
}

resource reflexTopic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: reflexTopicName
}

// Training data: on_data_blob is an Event Grid trigger; it reads url, eTag and contentLength from the event and
// never receives the blob's content.
resource dataBlobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: storageTopic
  name: 'reflex-on-data-blob'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${eventGridWebhook}?functionName=on_data_blob&code=${hostKeys.eventgrid_extension}'
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
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: blobCompletingApis
        }
        {
          // Reflex's own frozen copies of batches (shared/batches/freeze.py): not new data, never delivered
          operatorType: 'StringNotBeginsWith'
          key: 'subject'
          values: [
            '/blobServices/default/containers/${dataContainerName}/blobs/.reflex-frozen/'
          ]
        }
      ]
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

// Data to score: on_scoring_blob, the same way.
resource scoringBlobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: storageTopic
  name: 'reflex-on-scoring-blob'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${eventGridWebhook}?functionName=on_scoring_blob&code=${hostKeys.eventgrid_extension}'
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
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: blobCompletingApis
        }
        {
          // Reflex's own frozen copies of batches (shared/batches/freeze.py): not new data, never delivered
          operatorType: 'StringNotBeginsWith'
          key: 'subject'
          values: [
            '/blobServices/default/containers/${scoringContainerName}/blobs/.reflex-frozen/'
          ]
        }
      ]
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

// The gate's own Reflex.ModelRegistered (shared/registration/flow.py) to on_model_registered, besides Azure ML's
// ModelRegistered (workspace-subscriptions.bicep): Azure ML's events are still preview, and a registration must
// not depend on them alone. Both arrive for a model the gate registers; the rollout admits the second as a
// duplicate (shared/rollout/flow.py `register`). The custom topic's identity writes its dead letters (rbac.bicep).
resource reflexModelRegistered 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {
  parent: reflexTopic
  name: 'reflex-on-reflex-model-registered'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${eventGridWebhook}?functionName=on_model_registered&code=${hostKeys.eventgrid_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Reflex.ModelRegistered'
      ]
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
