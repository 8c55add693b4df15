// Alerts that reach a person, and the workbook to look at (#19 items 3 and 4).
//
// Every rule is a log search alert (Microsoft.Insights/scheduledQueryRules, API 2023-12-01: the request shape of
// azure-rest-api-specs specification/monitor/.../stable/2023-12-01/examples/createOrUpdateScheduledQueryRule.json,
// kept in tests/fixtures/azure-monitor/) over the `traces` table of Application Insights, where the Python exporter
// writes Reflex's log lines with their fields as customDimensions (shared/core/log.py says which, and from where):
//   the outcome line of every reaction (shared/core/reaction.py): reaction, outcome, explain_id, dead_letter;
//   one line per published Reflex.* event (shared/core/publish.py): reflex_event, reflex_subject, reflex_data, explain_id.
// Each rule splits by `explain_id`, so every alert instance names the id to give `python -m reflex explain`, and
// is stateful (autoMitigate): one notification when it fires, one when it resolves, not one per evaluation.
//
// The action group exists only when an email address is given (azd env set REFLEX_ALERT_EMAIL you@example.com):
// a group without receivers notifies nobody and would only be one more resource to keep. Without it the rules
// still fire and are listed in Azure Monitor > Alerts; add the address later and run `azd provision`.

param location string
param tags object = {}
@description('Application Insights component the rules query and the workbook belongs to.')
param appInsightsId string
param appInsightsName string
@description('Who is emailed when an alert fires; empty: no action group (the alerts still show in Azure Monitor).')
param alertEmail string = ''
param namePrefix string

var notify = !empty(alertEmail)
var explainHint = 'Run `python -m reflex explain <explain_id>` with the alert\'s explain_id dimension to see the chain and why; in Application Insights, `traces | where customDimensions.explain_id == "<explain_id>"`.'

// One entry per rule. `query` names only fields Reflex writes (tests/test_infra_ops.py derives them from the
// code); `dimensions` are columns of its result and always start with explain_id.
var alertRules = [
  {
    name: 'rollout-rolled-back'
    displayName: 'Reflex: a rollout rolled back'
    description: 'A rollout rolled back: the new deployment broke the rollout plan (error rate, latency, smoke test or an endpoint invariant) and traffic went back to the previous split. The reason dimension says which. ${explainHint}'
    severity: 2
    windowSize: 'PT10M'
    evaluationFrequency: 'PT5M'
    query: '''
traces
| where tostring(customDimensions.reflex_event) == "Reflex.RolloutRolledBack"
| extend data = parse_json(tostring(customDimensions.reflex_data))
| where tostring(data.reason) !has "deadline"
| project timestamp, explain_id = tostring(customDimensions.explain_id), endpoint = tostring(data.endpoint), reason = substring(tostring(data.reason), 0, 200)
'''
    dimensions: ['explain_id', 'endpoint', 'reason']
    metricMeasureColumn: ''
    threshold: 0
  }
  {
    name: 'job-failed'
    displayName: 'Reflex: a training or scoring job failed'
    description: 'A training job or a batch scoring job failed (in Azure ML, or could not be submitted). The event dimension says which kind, the reason dimension why. ${explainHint}'
    severity: 2
    windowSize: 'PT10M'
    evaluationFrequency: 'PT5M'
    query: '''
traces
| where tostring(customDimensions.reflex_event) in ("Reflex.TrainingFailed", "Reflex.BatchScoringFailed")
| extend data = parse_json(tostring(customDimensions.reflex_data))
| project timestamp, explain_id = tostring(customDimensions.explain_id), event = tostring(customDimensions.reflex_event), reason = substring(coalesce(tostring(data.error), tostring(data.reason)), 0, 200)
'''
    dimensions: ['explain_id', 'event', 'reason']
    metricMeasureColumn: ''
    threshold: 0
  }
  {
    name: 'event-dead-lettered'
    displayName: 'Reflex: an event was dead-lettered'
    description: 'A reaction could not handle an event and dead-lettered it (bad input, or a bug): it is kept with its error for replay. `python -m reflex dead-letters` lists them, `python -m reflex replay <dead_letter>` replays one once the cause is fixed. ${explainHint}'
    severity: 2
    windowSize: 'PT10M'
    evaluationFrequency: 'PT5M'
    query: '''
traces
| where tostring(customDimensions.outcome) == "dead-lettered"
| project timestamp, explain_id = tostring(customDimensions.explain_id), reaction = tostring(customDimensions.reaction), dead_letter = tostring(customDimensions.dead_letter)
'''
    dimensions: ['explain_id', 'reaction', 'dead_letter']
    metricMeasureColumn: ''
    threshold: 0
  }
  {
    name: 'rollout-past-deadline'
    displayName: 'Reflex: a rollout was stuck past its deadline'
    description: 'A rollout did not finish before its deadline (REFLEX_ROLLOUT_DEADLINE_SECONDS): the reconciler rolled it back or could not start it while a deployment kept provisioning or no metrics came, or the health timer found it still open past the deadline (the reconcile timer stopped, or keeps failing). The reason dimension says where it was stuck. ${explainHint}'
    severity: 1
    windowSize: 'PT10M'
    evaluationFrequency: 'PT5M'
    query: '''
traces
| where tostring(customDimensions.reflex_event) in ("Reflex.RolloutRolledBack", "Reflex.RolloutFailed", "Reflex.HealthCheckFailed")
| extend data = parse_json(tostring(customDimensions.reflex_data))
| where tostring(data.kind) == "rollout-overdue" or (tostring(customDimensions.reflex_event) != "Reflex.HealthCheckFailed" and tostring(data.reason) has "deadline")
| project timestamp, explain_id = tostring(customDimensions.explain_id), endpoint = coalesce(tostring(data.endpoint), tostring(data.evidence.endpoint)), reason = substring(coalesce(tostring(data.summary), tostring(data.reason)), 0, 200)
'''
    dimensions: ['explain_id', 'endpoint', 'reason']
    metricMeasureColumn: ''
    threshold: 0
  }
  {
    name: 'reaction-failing-repeatedly'
    displayName: 'Reflex: a reaction keeps failing'
    description: 'One reaction failed at least 3 times in an hour (transient failures the trigger redelivers, or dead letters): a dependency is down, a role is missing, or a timer keeps failing. The reaction dimension names it; explain_id is its latest failure. ${explainHint}'
    severity: 1
    windowSize: 'PT1H'
    evaluationFrequency: 'PT15M'
    query: '''
traces
| where tostring(customDimensions.outcome) in ("dead-lettered", "transient-failure")
| extend explain_id = tostring(customDimensions.explain_id), reaction = tostring(customDimensions.reaction)
| summarize failures = count(), arg_max(timestamp, explain_id) by reaction
| project failures, explain_id, reaction
'''
    dimensions: ['explain_id', 'reaction']
    metricMeasureColumn: 'failures'
    threshold: 2
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: '${namePrefix}-operators'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'reflex'
    enabled: true
    emailReceivers: [
      {
        name: 'reflex-operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource rules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in alertRules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: rule.evaluationFrequency
    windowSize: rule.windowSize
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: empty(rule.metricMeasureColumn) ? 'Count' : 'Total'
          metricMeasureColumn: empty(rule.metricMeasureColumn) ? null : rule.metricMeasureColumn
          dimensions: [for d in rule.dimensions: {
            name: d
            operator: 'Include'
            values: [
              '*'
            ]
          }]
          operator: 'GreaterThan'
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: notify ? [
        actionGroup.id
      ] : []
      customProperties: {
        explain: 'python -m reflex explain <explain_id>'
      }
    }
  }
}]

// The workbook: reactions by outcome, each endpoint's traffic split with the rollout's steps, canary against
// live metrics, failures with reasons, the chain of a chosen id. Its JSON is workbook.json (edit it in the portal's
// Advanced Editor and paste it back); __APP_INSIGHTS_ID__ there is this component.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsightsId, 'reflex-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Reflex (${appInsightsName})'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: replace(loadTextContent('workbook.json'), '__APP_INSIGHTS_ID__', appInsightsId)
    version: 'Notebook/1.0'
  }
}

output actionGroupId string = notify ? actionGroup.id : ''
output ruleNames array = [for (rule, i) in alertRules: rules[i].name]
output workbookId string = workbook.id
