// Data-plane roles in the app's resource group, each scoped as narrowly as the access it grants: a container
// where one container is used, a topic where one topic is. No role covers the whole account: blob intake is an
// Event Grid trigger (no blob trigger, so the host needs no queue). Every assignment is named
// guid(scope, principal, role) so a re-deploy finds it instead of failing on a duplicate.

param storageName string
param deploymentContainerName string
param dataContainerName string
param scoringContainerName string
param stateContainerName string
param outputContainerName string
param deadLetterContainerName string
param topicName string

@description('The Function App identity.')
param appPrincipalId string
@description('The compute cluster identity: reads the data the jobs train and score on, writes scoring outputs.')
param computePrincipalId string
@description('The workspace identity: previews and validates the credential-less datastores.')
param workspacePrincipalId string
@description('The topics\' identities: they write undeliverable events to the dead-letter container.')
param storageTopicPrincipalId string
param workspaceTopicPrincipalId string
param reflexTopicPrincipalId string
@description('Object id of the person running azd (AZURE_PRINCIPAL_ID); empty: no grant for local runs.')
param deployerPrincipalId string = ''
param deployerPrincipalType string = 'User'

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1' // Storage Blob Data Reader
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deploymentContainerName
}

resource hostsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'azure-webjobs-hosts'
}

resource secretsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'azure-webjobs-secrets'
}

resource dataContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: dataContainerName
}

resource scoringContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: scoringContainerName
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: stateContainerName
}

resource outputContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: outputContainerName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: topicName
}

// Functions host storage: the Flex platform reads and writes the deployment package with this identity.
// Owner, not Contributor, because the Functions docs require Owner for host storage; scoped to the host's own
// containers only.
resource appHostDeployment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deploymentContainer.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: deploymentContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Functions host storage: singleton locks, timer schedule status, host id.
resource appHostLocks 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostsContainer.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: hostsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Functions host storage: host and system keys (blobs_extension, eventgrid_extension).
resource appHostSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secretsContainer.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: secretsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Reflex reads training batches (manifests, markers); it writes there only its frozen copies (below).
resource appDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataContainer.id, appPrincipalId, roles.storageBlobDataReader)
  scope: dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Reflex freezes each batch before its job reads it (shared/batches/freeze.py): a server-side Copy Blob of the
// recorded versions into `.reflex-frozen/` of the same container (and the AutoML MLTable there). Contributor with
// a role assignment condition: it may write and delete only blobs whose path starts with `.reflex-frozen/`, never
// the uploaded data (condition format: learn.microsoft.com role-based-access-control/conditions-format; the blob
// `path` attribute: MicrosoftDocs/azure-docs articles/storage/blobs/storage-auth-abac-attributes.md).
var frozenWritesOnly = '''
(
 (
  !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'})
  AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'})
  AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete'})
 )
 OR
 (
  @Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith '.reflex-frozen/'
 )
)
'''

resource appDataFrozenWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataContainer.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    condition: frozenWritesOnly
    conditionVersion: '2.0'
  }
}

resource appScoringFrozenWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scoringContainer.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: scoringContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    condition: frozenWritesOnly
    conditionVersion: '2.0'
  }
}

// Reflex reads scoring batches; it writes there only its frozen copies (above).
resource appScoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scoringContainer.id, appPrincipalId, roles.storageBlobDataReader)
  scope: scoringContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Reflex's durable records: claims, arrivals, rollouts, dead letters, ledger.
resource appStateContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateContainer.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: stateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Batch scoring outputs and drift baselines.
resource appOutputContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outputContainer.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: outputContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Publishing Reflex.* events to the custom topic, and to no other topic.
resource appTopicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, appPrincipalId, roles.eventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Training jobs mount the data batch through the credential-less datastore as the cluster's identity.
resource computeDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataContainer.id, computePrincipalId, roles.storageBlobDataReader)
  scope: dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Batch scoring jobs read the scoring batch as the cluster's identity.
resource computeScoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scoringContainer.id, computePrincipalId, roles.storageBlobDataReader)
  scope: scoringContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Batch scoring jobs write their predictions to the outputs datastore.
resource computeOutputContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outputContainer.id, computePrincipalId, roles.storageBlobDataContributor)
  scope: outputContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The workspace validates and previews the credential-less datastores with its own identity.
resource workspaceDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataContainer.id, workspacePrincipalId, roles.storageBlobDataReader)
  scope: dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// As above, for the scoring datastore.
resource workspaceScoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scoringContainer.id, workspacePrincipalId, roles.storageBlobDataReader)
  scope: scoringContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// As above, for the outputs datastore.
resource workspaceOutputReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outputContainer.id, workspacePrincipalId, roles.storageBlobDataReader)
  scope: outputContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// BlobCreated events that cannot be delivered are written here (identity-based dead-lettering).
resource storageTopicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, storageTopicPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: storageTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Azure ML events that cannot be delivered are written here.
resource workspaceTopicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, workspaceTopicPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: workspaceTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Reflex.ModelRegistered events that cannot be delivered to on_model_registered are written here.
resource reflexTopicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, reflexTopicPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: reflexTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The person running azd uploads the first training batch (README) with their own login.
resource deployerDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(dataContainer.id, deployerPrincipalId, roles.storageBlobDataContributor)
  scope: dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

// And scoring batches.
resource deployerScoringContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(scoringContainer.id, deployerPrincipalId, roles.storageBlobDataContributor)
  scope: scoringContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}
