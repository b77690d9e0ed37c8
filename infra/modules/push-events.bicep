// ImagePushed events of one source registry, delivered to the app's replicate_on_push function.
// Deployed into the registry's resource group; a registry has at most one system topic.

@description('Name of the source registry (in this module\'s resource group).')
param registryName string

@description('Region of the source registry: a system topic lives where its source does.')
param location string

@description('Resource id of the Function App.')
param functionAppId string

@description('Create the subscription. Event Grid checks that the function exists, so deploy it only after the code is published.')
param createSubscription bool

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: '${registryName}-events'
  location: location
  properties: {
    source: registry.id
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
}

resource toFunction 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (createSubscription) {
  parent: topic
  name: 'replicate-on-push'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/replicate_on_push'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.ContainerRegistry.ImagePushed'
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}
