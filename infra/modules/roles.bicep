// The app's two custom roles. Role definitions are subscription objects, so this module runs at
// subscription scope; `assignableScopes` lists every subscription that holds a target or source registry.
targetScope = 'subscription'

@description('Name of the Function App, so that two deployments in one tenant get distinct roles.')
param appName string

@description('Subscription scopes (/subscriptions/<id>) where the roles may be assigned.')
param assignableScopes array

// Import into a target: the import itself, the registry read ARM does before it, and pull/read for the
// digest comparison (IfChanged, NoForce conflicts). The same three actions as the built-in
// "Container Registry Data Importer and Data Reader"; no push/write, no delete, no wildcard.
resource importRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, appName, 'acr-importer-import')
  properties: {
    roleName: 'ACR importer: import (${appName})'
    description: 'Import images into this registry through the ACR import API and read its manifests.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.ContainerRegistry/registries/importImage/action'
          'Microsoft.ContainerRegistry/registries/read'
          'Microsoft.ContainerRegistry/registries/pull/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

// Read a source ACR: AcrPull's pull/read, plus registries/read so that the app finds a source ACR by its
// login server (it lists the registries it can read, as `az acr import` does).
resource sourceRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, appName, 'acr-importer-source')
  properties: {
    roleName: 'ACR importer: source (${appName})'
    description: 'Read a source registry and pull its images for a server-side import.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.ContainerRegistry/registries/read'
          'Microsoft.ContainerRegistry/registries/pull/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

output importRoleName string = importRole.name
output sourceRoleName string = sourceRole.name
