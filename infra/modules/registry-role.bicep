// One role assignment on one registry, deployed into the registry's own resource group (which may be in
// another subscription than the app).

@description('Name of the registry (in this module\'s resource group).')
param registryName string

@description('Object id of the app\'s managed identity.')
param principalId string

@description('Role definition GUID (built-in or custom).')
param roleDefinitionName string

@description('Why the app holds this role, shown on the assignment.')
param purpose string

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, principalId, roleDefinitionName)
  scope: registry
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionName)
    description: purpose
  }
}
