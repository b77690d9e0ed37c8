// acr-importer on Azure: a Python 3.11 Function App on Flex Consumption that imports images into ACR with
// its managed identity. No keys anywhere: storage, Application Insights and Key Vault are reached with the
// app's identity, and source credentials are Key Vault references.
//
// Deploy:  az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.example.json
// Checked by infra/check.py (python -m infra.check): every setting the code reads is set here, the custom
// roles grant only what import needs, and no connection uses a key.
targetScope = 'resourceGroup'

@description('Short name used in every resource name (lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param name string

@description('Region of the app and its resources.')
param location string = resourceGroup().location

@description('Default target: resource id of the ACR that images are imported into (TARGET_REGISTRY).')
param targetRegistryId string

@description('Further registries the app may import into (resource ids). The import role is assigned on each.')
param additionalTargetRegistryIds array = []

@description('Source ACRs imported from with the app\'s identity (resource ids). The source role is assigned on each.')
param sourceRegistryIds array = []

@description('Source ACRs whose pushes replicate_on_push handles: [{ id: <resource id>, location: <region> }].')
param replicationSources array = []

@description('Create the Event Grid subscriptions to replicate_on_push. Set true on the second deployment, after the code is published.')
param deployEventSubscriptions bool = false

@description('ALLOWED_SOURCE_REGISTRIES: registry hosts (`*.domain` wildcards) or ACR resource ids requests may import from.')
param allowedSourceRegistries string = 'docker.io,mcr.microsoft.com'

@description('Credential sets: [{ name: \'DOCKERHUB\', username: \'...\', secretName: \'dockerhub-token\', registries: \'docker.io\' }]. The password is the Key Vault secret `secretName`, set after deployment.')
param credentialSets array = []

@description('Run as a user-assigned identity (created here) instead of the system-assigned one.')
param useUserAssignedIdentity bool = false

@description('IMPORT_QUEUE: the request queue; `-rejected` and `-poison` queues are created beside it.')
param importQueue string = 'acr-import-requests'

@description('IMPORT_STATUS_TABLE: the status table (letters and digits).')
param statusTable string = 'importstatus'

@description('REFRESH_SCHEDULE: NCRONTAB (UTC) of refresh_tracked_images.')
param refreshSchedule string = '0 0 * * * *'

@description('TRACKED_IMAGES: the refresh configuration, a path in the app package or an https blob URL.')
param trackedImages string = 'tracked-images.json'

@description('REPLICATION_RULES: the replication rules of replicate_on_push, a path in the app package or an https blob URL.')
param replicationRules string = 'replication-rules.json'

@description('REGISTRY_ENDPOINTS: host=https://endpoint pairs for the app\'s own registry reads (private networking).')
param registryEndpoints string = ''

@description('BACKUP_TAG_TEMPLATE: keep a tag\'s previous image under this tag before a Force or IfChanged import moves it, e.g. {tag}-backup-{date}; empty: off.')
param backupTagTemplate string = ''

@description('Overrides of the tuning settings below (same names); unset keys keep their defaults.')
param tuning object = {}

@description('Most instances Flex Consumption may scale out to.')
param maximumInstanceCount int = 40

// --- the operator's view: sign-in, workbook, alerts ----------------------------------------------------
@description('Entra ID sign-in (App Service Authentication) for the status page and its JSON: the application (client) id of an Entra app registration. Empty: off, and those routes use function keys (OPERATOR_SIGN_IN=key).')
param operatorSignInClientId string = ''

@description('The tenant of that app registration; the only tenant whose tokens are accepted.')
param operatorSignInTenantId string = subscription().tenantId

@description('Object id of the Entra security group whose members may sign in (checked by App Service against the token\'s groups claim); empty: anyone the app registration lets sign in.')
param operatorGroupObjectId string = ''

@description('An app role (its value) of the sign-in app registration that people need to read the status page and its JSON; empty: any person Entra signs in (and the group allows). The app checks it: App Service Authentication checks groups, not app roles.')
param operatorAppRole string = ''

@description('Resource id of an existing action group the alert rules notify; empty: the rules fire in the portal only.')
param alertActionGroupId string = ''

@description('Failure-rate alert: fire when more than this percentage of the imports that ended in the window ended failed.')
@minValue(1)
@maxValue(100)
param alertFailureRatePercent int = 10

@description('Failure-rate alert: below this many ended imports in the window the rate is not judged.')
@minValue(1)
param alertFailureRateMinimumImports int = 5

@description('Refresh alert: fire when no refresh run was recorded in this many minutes (about twice REFRESH_SCHEDULE\'s interval plus REFRESH_TIME_BUDGET_SECONDS; 150 for the hourly default).')
@minValue(10)
@maxValue(2880)
param alertRefreshMissingMinutes int = 150

var suffix = take(uniqueString(resourceGroup().id, name), 6)
var appName = 'func-${name}-${suffix}'
var storageName = toLower('st${name}${suffix}')
var vaultName = 'kv-${name}-${suffix}'
var packageContainer = 'app-package'
var targetRegistryIds = union([targetRegistryId], additionalTargetRegistryIds)
var replicationSourceIds = map(replicationSources, s => s.id)
var pullRegistryIds = union(sourceRegistryIds, replicationSourceIds)
var roleScopes = union(map(union(targetRegistryIds, pullRegistryIds), id => '/subscriptions/${split(id, '/')[2]}'), [])

var tuningDefaults = {
  IMPORT_MAX_ATTEMPTS: '6'
  IMPORT_RETRY_BASE_SECONDS: '15'
  IMPORT_RETRY_MAX_SECONDS: '900'
  AUTHORIZATION_GRACE_SECONDS: '600'
  IMPORT_POLL_INTERVAL_SECONDS: '0.5'
  IMPORT_WAIT_SECONDS: '20'
  IMPORT_DEADLINE_SECONDS: '7200'
  REFERRERS: 'all'
  REFERRERS_REQUIRED: 'false'
  REFERRERS_MAX_DEPTH: '4'
  REFERRERS_MAX_COUNT: '64'
  REFERRERS_COSIGN_TAGS: 'true'
  REFRESH_CONCURRENCY: '16'
  REFRESH_BACKOFF_SECONDS: '300'
  REFRESH_TIME_BUDGET_SECONDS: '420'
  STATUS_RETENTION_DAYS: '30'
}
var tuned = union(tuningDefaults, tuning)

// Built-in roles the app holds on its own resources (ids are the same in every tenant).
var builtInRoles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource userIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = if (useUserAssignedIdentity) {
  name: 'id-${name}-${suffix}'
  location: location
}

// App Service Authentication's client credential: a federated identity credential on the app registration that
// trusts this identity, instead of a client secret (App Service's MI-as-FIC, OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID).
// Its own identity, used for nothing else, so no other code path holds a credential for the app registration.
var operatorSignIn = !empty(operatorSignInClientId)

resource signInIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = if (operatorSignIn) {
  name: 'id-${name}-${suffix}-signin'
  location: location
}

var appUserIdentities = union(
  useUserAssignedIdentity ? { '${userIdentity.id}': {} } : {},
  operatorSignIn ? { '${signInIdentity.id}': {} } : {}
)

var principalId = useUserAssignedIdentity ? userIdentity.properties.principalId : functionApp.identity.principalId
var clientId = useUserAssignedIdentity ? userIdentity.properties.clientId : ''

// --- storage: host state, the deployment package, the queues and the status table; Entra ID only ------
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource packageBlobs 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: packageContainer
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queue in [importQueue, '${importQueue}-rejected', '${importQueue}-poison']: {
  parent: queueService
  name: queue
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource statusTableResource 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: statusTable
}

// --- observability: Application Insights on Log Analytics, Entra ID ingestion only ---------------------
resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${name}-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// --- Key Vault: credential-set secrets, read by the app through Key Vault references -------------------
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: vaultName
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
  }
}

// --- the Function App ----------------------------------------------------------------------------------
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

var storageConnection = [
  { name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
  { name: 'AzureWebJobsStorage__queueServiceUri', value: storage.properties.primaryEndpoints.queue }
  { name: 'AzureWebJobsStorage__tableServiceUri', value: storage.properties.primaryEndpoints.table }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
]

var userIdentitySettings = useUserAssignedIdentity ? [
  { name: 'AzureWebJobsStorage__clientId', value: clientId }
] : []

var insightsAuthentication = useUserAssignedIdentity ? 'Authorization=AAD;ClientId=${clientId}' : 'Authorization=AAD'

var appSettingsList = [
  // The Python worker's sync thread pool. Unset, its size depends on the worker and host versions (1 in the
  // 3.7-3.12 worker, or what the host injects; min(32, cores + 4) in the newer one), so it is set here: 24
  // queue messages run at once per instance (host.json batchSize 16 + newBatchThreshold 8), each mostly waiting
  // on ARM, and a call waiting for a thread already spends its functionTimeout; 8 more keep the timers, HTTP,
  // Event Grid and poison-queue functions from waiting behind a full batch. tests/test_deadlines.py
  // checks this against host.json and local.settings.sample.json.
  { name: 'PYTHON_THREADPOOL_THREAD_COUNT', value: '32' }
  { name: 'IMPORT_QUEUE', value: importQueue }
  { name: 'IMPORT_STATUS_TABLE', value: statusTable }
  { name: 'TARGET_REGISTRY', value: targetRegistryId }
  { name: 'ALLOWED_TARGET_REGISTRIES', value: join(targetRegistryIds, ',') }
  { name: 'ALLOWED_SOURCE_REGISTRIES', value: allowedSourceRegistries }
  { name: 'ALLOW_INLINE_CREDENTIALS', value: 'false' }
  { name: 'AZURE_CLIENT_ID', value: clientId }
  { name: 'ARM_ENDPOINT', value: environment().resourceManager }
  { name: 'ARM_AUDIENCE', value: environment().authentication.audiences[0] }
  { name: 'ACR_LOGIN_SERVER_SUFFIX', value: substring(environment().suffixes.acrLoginServer, 1) }
  { name: 'IMPORT_MAX_ATTEMPTS', value: string(tuned.IMPORT_MAX_ATTEMPTS) }
  { name: 'IMPORT_RETRY_BASE_SECONDS', value: string(tuned.IMPORT_RETRY_BASE_SECONDS) }
  { name: 'IMPORT_RETRY_MAX_SECONDS', value: string(tuned.IMPORT_RETRY_MAX_SECONDS) }
  { name: 'AUTHORIZATION_GRACE_SECONDS', value: string(tuned.AUTHORIZATION_GRACE_SECONDS) }
  { name: 'IMPORT_POLL_INTERVAL_SECONDS', value: string(tuned.IMPORT_POLL_INTERVAL_SECONDS) }
  { name: 'IMPORT_WAIT_SECONDS', value: string(tuned.IMPORT_WAIT_SECONDS) }
  { name: 'IMPORT_DEADLINE_SECONDS', value: string(tuned.IMPORT_DEADLINE_SECONDS) }
  { name: 'REFERRERS', value: string(tuned.REFERRERS) }
  { name: 'REFERRERS_REQUIRED', value: string(tuned.REFERRERS_REQUIRED) }
  { name: 'REFERRERS_MAX_DEPTH', value: string(tuned.REFERRERS_MAX_DEPTH) }
  { name: 'REFERRERS_MAX_COUNT', value: string(tuned.REFERRERS_MAX_COUNT) }
  { name: 'REFERRERS_COSIGN_TAGS', value: string(tuned.REFERRERS_COSIGN_TAGS) }
  { name: 'REFRESH_SCHEDULE', value: refreshSchedule }
  { name: 'TRACKED_IMAGES', value: trackedImages }
  { name: 'REFRESH_CONCURRENCY', value: string(tuned.REFRESH_CONCURRENCY) }
  { name: 'REFRESH_BACKOFF_SECONDS', value: string(tuned.REFRESH_BACKOFF_SECONDS) }
  { name: 'REFRESH_TIME_BUDGET_SECONDS', value: string(tuned.REFRESH_TIME_BUDGET_SECONDS) }
  { name: 'REGISTRY_ENDPOINTS', value: registryEndpoints }
  { name: 'BACKUP_TAG_TEMPLATE', value: backupTagTemplate }
  { name: 'REPLICATION_RULES', value: replicationRules }
  { name: 'STATUS_RETENTION_DAYS', value: string(tuned.STATUS_RETENTION_DAYS) }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: insightsAuthentication }
  { name: 'OPERATOR_SIGN_IN', value: operatorSignIn ? 'entra' : 'key' }
  { name: 'OPERATOR_APP_ROLE', value: operatorAppRole }
]

// Read by App Service Authentication, not by the app: the sign-in identity's client id (the client assertion
// instead of a secret) and the one tenant whose tokens are accepted.
var signInSettings = operatorSignIn ? [
  { name: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID', value: signInIdentity.properties.clientId }
  { name: 'WEBSITE_AUTH_AAD_ALLOWED_TENANTS', value: operatorSignInTenantId }
] : []

// SOURCE_CREDENTIALS__<NAME>__*: the password is always a Key Vault reference, never a value.
var credentialSettings = flatten(map(credentialSets, c => concat(
  contains(c, 'username') ? [
    { name: 'SOURCE_CREDENTIALS__${toUpper(c.name)}__USERNAME', value: c.username }
  ] : [],
  [
    { name: 'SOURCE_CREDENTIALS__${toUpper(c.name)}__PASSWORD', value: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=${c.secretName})' }
  ],
  contains(c, 'registries') ? [
    { name: 'SOURCE_CREDENTIALS__${toUpper(c.name)}__REGISTRIES', value: c.registries }
  ] : []
)))

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: empty(appUserIdentities) ? {
    type: 'SystemAssigned'
  } : {
    type: 'SystemAssigned, UserAssigned'
    userAssignedIdentities: appUserIdentities
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: useUserAssignedIdentity ? userIdentity.id : 'SystemAssigned'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${packageContainer}'
          authentication: useUserAssignedIdentity ? {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: userIdentity.id
          } : {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: concat(storageConnection, userIdentitySettings, appSettingsList, credentialSettings, signInSettings)
    }
  }
}

// --- App Service Authentication: people sign in with Entra ID; machines keep function keys ---------------
// On only with operatorSignInClientId. Everything requires sign-in (people are sent to the login page), except
// the machine API and Event Grid's webhook: Easy Auth and function keys do not compose (a request must get
// past Easy Auth before the host reads its key, Azure/azure-functions-host#11394), so those paths are excluded
// and keep their keys, and the operator routes are ANONYMOUS at the host under OPERATOR_SIGN_IN=entra.
// infra/check.py derives the excluded paths from function_app.py and fails when one is missing or when an
// operator route would be left open.
resource signIn 'Microsoft.Web/sites/config@2024-04-01' = if (operatorSignIn) {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: [
        '/api/imports'
        '/api/imports/*'
        '/runtime/webhooks/eventgrid'
        '/runtime/webhooks/EventGrid'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: operatorSignInClientId
          clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
          openIdIssuer: '${environment().authentication.loginEndpoint}${operatorSignInTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${operatorSignInClientId}'
            operatorSignInClientId
          ]
          defaultAuthorizationPolicy: {
            allowedPrincipals: empty(operatorGroupObjectId) ? {} : {
              groups: [
                operatorGroupObjectId
              ]
            }
          }
        }
      }
    }
    login: {
      tokenStore: {
        enabled: true
      }
    }
  }
}

// --- Azure Monitor: a workbook over the app's telemetry, and alert rules ---------------------------------
// The queries live in infra/monitor/; infra/check.py verifies that every metric, dimension, log event and field
// they use is one the code emits.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appName, 'workbook')
  location: location
  kind: 'shared'
  properties: {
    displayName: 'acr-importer (${appName})'
    category: 'workbook'
    serializedData: replace(loadTextContent('monitor/workbook.json'), '__APPLICATION_INSIGHTS_ID__', insights.id)
    sourceId: insights.id
  }
}

// Log search alerts evaluate over windows of fixed sizes; the refresh query filters to the minutes asked.
var refreshWindow = alertRefreshMissingMinutes <= 60 ? 'PT1H' : alertRefreshMissingMinutes <= 120 ? 'PT2H' : alertRefreshMissingMinutes <= 180 ? 'PT3H' : alertRefreshMissingMinutes <= 360 ? 'PT6H' : alertRefreshMissingMinutes <= 1440 ? 'P1D' : 'P2D'

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${name}-${suffix}-poison'
  location: location
  properties: {
    displayName: 'acr-importer ${appName}: messages went to the poison queue'
    description: 'The host gave up on a queue message after repeated crashes; import_image_poison recorded it as failed (dead-lettered). The function logs hold the exception.'
    severity: 2
    enabled: true
    scopes: [
      insights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('monitor/alerts/poison-messages.kql')
          timeAggregation: 'Total'
          metricMeasureColumn: 'poisoned'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(alertActionGroupId) ? [] : [alertActionGroupId]
    }
  }
}

resource failureRateAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${name}-${suffix}-failure-rate'
  location: location
  properties: {
    displayName: 'acr-importer ${appName}: import failure rate above ${alertFailureRatePercent}%'
    description: 'More than ${alertFailureRatePercent}% of the imports that ended in the last hour ended failed (at least ${alertFailureRateMinimumImports} ended). See the workbook\'s failures by code.'
    severity: 2
    enabled: true
    scopes: [
      insights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: replace(loadTextContent('monitor/alerts/failure-rate.kql'), '__MINIMUM__', string(alertFailureRateMinimumImports))
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failurePercent'
          operator: 'GreaterThan'
          threshold: alertFailureRatePercent
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(alertActionGroupId) ? [] : [alertActionGroupId]
    }
  }
}

resource refreshMissingAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${name}-${suffix}-refresh-missing'
  location: location
  properties: {
    displayName: 'acr-importer ${appName}: no refresh run in ${alertRefreshMissingMinutes} minutes'
    description: 'refresh_tracked_images (REFRESH_SCHEDULE ${refreshSchedule}) recorded no run: the timer did not fire, or crashed before its summary.'
    severity: 2
    enabled: true
    scopes: [
      insights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: refreshWindow
    criteria: {
      allOf: [
        {
          query: replace(loadTextContent('monitor/alerts/refresh-missing.kql'), '__MINUTES__', string(alertRefreshMissingMinutes))
          timeAggregation: 'Minimum'
          metricMeasureColumn: 'runs'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(alertActionGroupId) ? [] : [alertActionGroupId]
    }
  }
}

// --- the app's roles on its own resources --------------------------------------------------------------
resource blobAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appName, builtInRoles.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', builtInRoles.storageBlobDataOwner)
    description: 'Functions host state and the deployment package'
  }
}

resource queueAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appName, builtInRoles.storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', builtInRoles.storageQueueDataContributor)
    description: 'Import requests, retries, dead letters'
  }
}

resource tableAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appName, builtInRoles.storageTableDataContributor)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', builtInRoles.storageTableDataContributor)
    description: 'Import status and refresh summaries'
  }
}

resource secretAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appName, builtInRoles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', builtInRoles.keyVaultSecretsUser)
    description: 'Credential sets as Key Vault references'
  }
}

resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, appName, builtInRoles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', builtInRoles.monitoringMetricsPublisher)
    description: 'Telemetry ingestion with Entra ID (local auth is off)'
  }
}

// --- the app's roles on registries, in their own resource groups and subscriptions ---------------------
module roles 'modules/roles.bicep' = {
  name: '${appName}-roles'
  scope: subscription()
  params: {
    appName: appName
    assignableScopes: roleScopes
  }
}

module targetAccess 'modules/registry-role.bicep' = [for (id, i) in targetRegistryIds: {
  name: '${appName}-target-${i}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    registryName: last(split(id, '/'))
    principalId: principalId
    roleDefinitionName: roles.outputs.importRoleName
    purpose: 'acr-importer ${appName}: import images into this registry'
  }
}]

module sourceAccess 'modules/registry-role.bicep' = [for (id, i) in pullRegistryIds: {
  name: '${appName}-source-${i}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    registryName: last(split(id, '/'))
    principalId: principalId
    roleDefinitionName: roles.outputs.sourceRoleName
    purpose: 'acr-importer ${appName}: import images from this registry'
  }
}]

module pushEvents 'modules/push-events.bicep' = [for (source, i) in replicationSources: {
  name: '${appName}-events-${i}'
  scope: resourceGroup(split(source.id, '/')[2], split(source.id, '/')[4])
  params: {
    registryName: last(split(source.id, '/'))
    location: source.location
    functionAppId: functionApp.id
    createSubscription: deployEventSubscriptions
  }
}]

output functionAppName string = functionApp.name
output storageAccountName string = storage.name
output keyVaultName string = vault.name
output applicationInsightsName string = insights.name
output principalId string = principalId
output importQueue string = importQueue
output workbookId string = workbook.id
// For the app registration (docs/operations.md): the sign-in redirect URI, and the identity its federated
// identity credential trusts (subject: this object id; issuer: the tenant's v2.0 endpoint; audience api://AzureADTokenExchange).
output signInRedirectUri string = operatorSignIn ? 'https://${functionApp.properties.defaultHostName}/.auth/login/aad/callback' : ''
output signInIdentityPrincipalId string = operatorSignIn ? signInIdentity.properties.principalId : ''
