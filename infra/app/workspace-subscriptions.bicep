// Azure ML events to the Event Grid triggered functions (deployed by subscriptions.bicep, in the workspace's
// resource group). RunStatusChanged fires only for failed runs; RunCompleted for completed ones.

param systemTopicName string
@secure()
@description('The Functions host eventgrid_extension system key.')
param eventGridKey string
param functionAppHostName string
param storageId string
param deadLetterContainerName string

var eventGridWebhook = 'https://${functionAppHostName}/runtime/webhooks/eventgrid'

resource workspaceTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource runEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: workspaceTopic
  name: 'reflex-on-run-event'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${eventGridWebhook}?functionName=on_run_event&code=${eventGridKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.RunCompleted'
        'Microsoft.MachineLearningServices.RunStatusChanged'
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

resource modelRegistered 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: workspaceTopic
  name: 'reflex-on-model-registered'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${eventGridWebhook}?functionName=on_model_registered&code=${eventGridKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.ModelRegistered'
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
