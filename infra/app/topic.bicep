// The custom topic Reflex publishes its own Reflex.* events to (shared/core/publish.py). Only Entra ID may publish:
// local (key) auth is off, and the app's identity holds EventGrid Data Sender on this topic alone (rbac.bicep).

param name string
param location string
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  //checkov:skip=CKV_AZURE_193:no VNet in this template: the Function App, Event Grid and Azure ML reach it over its public endpoint, Entra ID only
  name: name
  location: location
  tags: tags
  // Writes dead letters of its subscriptions (Reflex.ModelRegistered -> on_model_registered) with this identity:
  // Storage Blob Data Contributor on the dead-letter container only (rbac.bicep).
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'EventGridSchema'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output id string = topic.id
output name string = topic.name
output endpoint string = topic.properties.endpoint
output principalId string = topic.identity.principalId
