#!/usr/bin/env bash
# azd postdeploy hook: the steps that cannot be in `azd provision`, each safe to run any number of times.
#
#  1. Wait until the deployed host has created its eventgrid_extension system key (every subscription delivers to
#     an Event Grid trigger through it). It exists only once the functions run.
#  2. Register jobs/train as the training code asset named by REFLEX_TRAINING_CODE, if that version is missing
#     (versions are immutable: bump trainingCodeVersion in main.bicep to ship a changed train.py).
#  3. Deploy infra/app/subscriptions.bicep: the five Event Grid subscriptions (BlobCreated in the data and the
#     scoring container, Azure ML's run and model events, Reflex's own ModelRegistered), keyed by name. An ARM
#     deployment creates what is missing and updates what exists, so a second run changes nothing.
#
# Needs: az (logged in, with the `ml` extension), and the azd environment's outputs (azd exports them to hooks;
# run by hand with `eval "$(azd env get-values)"` first).
set -euo pipefail

need() { [[ -n "${!1:-}" ]] || { echo "subscribe.sh: $1 is not set (run inside azd, or eval \"\$(azd env get-values)\")" >&2; exit 2; }; }
for v in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_FUNCTION_APP_ID AZURE_FUNCTION_APP_HOST \
         AZURE_STORAGE_ACCOUNT_ID AZURE_STORAGE_SYSTEM_TOPIC AZUREML_WORKSPACE AZUREML_RESOURCE_GROUP \
         AZUREML_SYSTEM_TOPIC AZURE_EVENTGRID_TOPIC_NAME REFLEX_DATA_CONTAINER REFLEX_SCORING_CONTAINER REFLEX_DEADLETTER_CONTAINER \
         REFLEX_TRAINING_CODE_NAME REFLEX_TRAINING_CODE_VERSION; do
  need "$v"
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
attempts="${REFLEX_KEY_WAIT_ATTEMPTS:-30}"

echo "Waiting for the host's eventgrid_extension key on ${AZURE_FUNCTION_APP_NAME} ..."
for ((i = 1; i <= attempts; i++)); do
  key="$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
           --query "systemKeys.eventgrid_extension" -o tsv 2>/dev/null || true)"
  if [[ -n "$key" && "$key" != None ]]; then
    echo "  key present."
    break
  fi
  if ((i == attempts)); then
    echo "subscribe.sh: the host has not created its eventgrid_extension key after ${attempts} tries; is the code" \
         "deployed and are on_data_blob and on_run_event listed by 'az functionapp function list'?" >&2
    exit 1
  fi
  # A request wakes the app so the host starts and indexes the functions.
  curl -fsS -o /dev/null "https://${AZURE_FUNCTION_APP_HOST}/" || true
  sleep 10
done

code="${REFLEX_TRAINING_CODE_NAME}:${REFLEX_TRAINING_CODE_VERSION}"
ml=(-g "$AZUREML_RESOURCE_GROUP" -w "$AZUREML_WORKSPACE")
if az ml code show --name "$REFLEX_TRAINING_CODE_NAME" --version "$REFLEX_TRAINING_CODE_VERSION" "${ml[@]}" \
     >/dev/null 2>&1; then
  echo "Training code ${code} already registered."
else
  echo "Registering ${root}/jobs/train as training code ${code} ..."
  az ml code create --name "$REFLEX_TRAINING_CODE_NAME" --version "$REFLEX_TRAINING_CODE_VERSION" \
    --path "${root}/jobs/train" "${ml[@]}" -o none
fi

echo "Deploying the Event Grid subscriptions (create or update by name) ..."
az deployment group create -g "$AZURE_RESOURCE_GROUP" -n reflex-subscriptions \
  -f "${root}/infra/app/subscriptions.bicep" -o none \
  -p functionAppId="$AZURE_FUNCTION_APP_ID" functionAppHostName="$AZURE_FUNCTION_APP_HOST" \
     storageId="$AZURE_STORAGE_ACCOUNT_ID" storageSystemTopicName="$AZURE_STORAGE_SYSTEM_TOPIC" \
     dataContainerName="$REFLEX_DATA_CONTAINER" scoringContainerName="$REFLEX_SCORING_CONTAINER" \
     deadLetterContainerName="$REFLEX_DEADLETTER_CONTAINER" \
     workspaceResourceGroup="$AZUREML_RESOURCE_GROUP" workspaceSystemTopicName="$AZUREML_SYSTEM_TOPIC" \
     reflexTopicName="$AZURE_EVENTGRID_TOPIC_NAME"

az eventgrid system-topic event-subscription list -g "$AZURE_RESOURCE_GROUP" \
  --system-topic-name "$AZURE_STORAGE_SYSTEM_TOPIC" --query "[].{name:name, state:provisioningState}" -o table
az eventgrid system-topic event-subscription list -g "$AZUREML_RESOURCE_GROUP" \
  --system-topic-name "$AZUREML_SYSTEM_TOPIC" --query "[].{name:name, state:provisioningState}" -o table
az eventgrid topic event-subscription list -g "$AZURE_RESOURCE_GROUP" \
  --topic-name "$AZURE_EVENTGRID_TOPIC_NAME" --query "[].{name:name, state:provisioningState}" -o table
