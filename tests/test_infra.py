"""Static checks of the Azure deployment (infra/): it parses, passes checkov, and says what Reflex needs.

Why: nothing here can deploy to Azure, so the Bicep is checked the way a reviewer would, but every time. Each
`.bicep` file must parse with pycep (the parser checkov uses); checkov must report no failed check, and each
skip must carry its reason; the role assignments, Event Grid topics and subscriptions, and the Flex Consumption
app are asserted from the parsed templates; and the app settings the Bicep writes must be exactly those
shared/core/settings.py reads, plus the host's own identity-based storage connection.

checkov lives in its own virtual environment (`make tools` creates .venv-tools) because its pinned
dependencies would downgrade packages the app needs; the test fails, not skips, when it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.batches.paths import FROZEN_ROOT
from shared.core.settings import SPEC, load

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
APP = INFRA / "app"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Settings the Functions host reads for itself (not declared in shared/core/settings.py).
HOST_SETTINGS = {
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
}
# Declared in settings.py with defaults, but the host resolves %NAME% in trigger definitions from app settings
# only, and Azure resource names must match what the Bicep created: so these are written explicitly.
MUST_WRITE = {
    "REFLEX_PLATFORM", "AZURE_CLIENT_ID", "APPLICATIONINSIGHTS_CONNECTION_STRING", "REFLEX_EVENTGRID_TOPIC_ENDPOINT",
    "REFLEX_DATA_CONTAINER", "REFLEX_SCORING_CONTAINER", "REFLEX_STATE_CONTAINER", "REFLEX_OUTPUT_CONTAINER",
    "REFLEX_DATA_DATASTORE", "REFLEX_SCORING_DATASTORE", "REFLEX_OUTPUT_DATASTORE",
    "REFLEX_TRAINING_COMPUTE", "REFLEX_BATCH_COMPUTE", "REFLEX_TRAINING_ENVIRONMENT", "REFLEX_TRAINING_CODE",
    "REFLEX_SWEEP_SCHEDULE", "REFLEX_RECONCILE_SCHEDULE", "REFLEX_HEALTH_SCHEDULE", "REFLEX_DRIFT_SCHEDULE",
    "REFLEX_RETRAIN_SCHEDULE", "REFLEX_BATCH_SCHEDULE", "REFLEX_LEDGER_INDEX_SCHEDULE",
    "REFLEX_MODEL_NAME", "REFLEX_ENDPOINTS", "REFLEX_BATCH_ENDPOINT",
}
# App settings whose values main.bicep derives from the deployment's resource token instead of taking
# shared/core/settings.py's defaults: endpoint names are unique per region, a compute name per region's computes.
DERIVED = {"REFLEX_ENDPOINTS", "REFLEX_BATCH_ENDPOINT", "REFLEX_TRAINING_COMPUTE", "REFLEX_BATCH_COMPUTE"}

ROLE_NAMES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
    "43d0d8ad-25c7-4714-9337-8ba259a9fe05": "Monitoring Reader",
}


# ------------------------------------------------------------------------------------------------ helpers


@cache
def parsed(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def body(decl: dict[str, Any]) -> dict[str, Any]:
    """The body of a resource or module declaration; `= if (cond) {...}` nests it one level down."""
    cfg = decl["config"]
    return cfg["config"] if set(cfg) == {"condition", "config"} else cfg


def resources(path: Path, type_: str) -> dict[str, dict[str, Any]]:
    """symbol -> body of each resource of that type declared in the file."""
    return {name: {**r, "config": body(r)} for name, r in parsed(path).get("resources", {}).items()
            if r["type"] == type_}


def interpolate(path: Path, text: str) -> str:
    """Replace ${var} by the file's string variables, so URLs built from parts can be read whole."""
    variables = parsed(path).get("variables", {})
    return re.sub(r"\$\{(\w+)\}", lambda m: v if isinstance(v := variables.get(m[1], {}).get("value"), str)
                  else m[0], text)


def accessor(node: Any) -> str:
    """`a.b.c` from pycep's nested property_accessor nodes; plain strings pass through."""
    if isinstance(node, str):
        return node
    op = node.get("operator") if isinstance(node, dict) else None
    if op and op["type"] == "property_accessor":
        return f"{accessor(op['operands']['operand_1'])}.{accessor(op['operands']['operand_2'])}"
    raise AssertionError(f"not a property access: {node!r}")


def role_assignments(path: Path) -> dict[str, tuple[str, str, str, list[str]]]:
    """symbol -> (scope symbol, principal expression, role id, guid() arguments)."""
    roles = parsed(path)["variables"]["roles"]["value"]
    out = {}
    for name, r in resources(path, "Microsoft.Authorization/roleAssignments").items():
        cfg = r["config"]
        props = cfg["properties"]
        role_ref = props["roleDefinitionId"]["function"]
        assert role_ref["type"] == "subscription_resource_id", name
        assert role_ref["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions", name
        role_id = roles[accessor(role_ref["parameters"]["resource_name_1"]).removeprefix("roles.")]
        guid = cfg["name"]["function"]
        assert guid["type"] == "guid", f"{name}: role assignment names must be guid(...)"
        args = [accessor(a) for a in guid["parameters"].values() if a is not None]
        out[name] = (cfg["scope"], accessor(props["principalId"]), role_id, args)
    return out


def find_checkov() -> Path:
    candidates = [Path(sys.executable).parent / "checkov", ROOT / ".venv-tools" / "bin" / "checkov"]
    found = shutil.which("checkov")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail("checkov is not installed: run `make tools` (creates .venv-tools from tools-requirements.txt); "
                f"looked in {', '.join(str(c) for c in candidates)}")


# ------------------------------------------------------------------------------------------ parse + checkov


def test_infra_has_the_expected_templates() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "app/function.bicep", "app/storage.bicep", "app/rbac.bicep", "app/ml.bicep",
            "app/workspace.bicep", "app/subscriptions.bicep", "app/workspace-subscriptions.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    doc = parsed(path)
    assert doc.get("resources") or doc.get("modules"), f"{path.name}: nothing declared"


def test_module_calls_match_module_parameters() -> None:
    """What a compiler would catch: a module given an unknown parameter, or missing a required one."""
    for path in BICEP_FILES:
        for name, mod in parsed(path).get("modules", {}).items():
            target = (path.parent / mod["detail"]["path"]).resolve()
            declared = parsed(target)["parameters"]
            given = set(body(mod)["params"])
            required = {p for p, d in declared.items() if "default" not in d}
            assert given <= set(declared), f"{path.name}:{name} passes unknown {sorted(given - set(declared))}"
            assert required <= given, f"{path.name}:{name} misses required {sorted(required - given)}"


def test_checkov_reports_no_failed_check_and_every_skip_has_a_reason() -> None:
    checkov = find_checkov()
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(
        [str(checkov), "-d", str(INFRA), "--framework", "bicep", "--compact", "-o", "json", "--skip-download"],
        capture_output=True, text=True, env=env, timeout=240, check=False)
    assert proc.stdout.strip(), f"checkov printed nothing; stderr:\n{proc.stderr[-2000:]}"
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    summary, results = report["summary"], report["results"]
    failed = [f"{c['check_id']} {c['file_path']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0, summary
    assert summary["resource_count"] > 50, f"checkov saw too few resources to have read the templates: {summary}"
    assert summary["passed"] > 0, summary
    for skip in results.get("skipped_checks", []):
        reason = (skip.get("check_result") or {}).get("suppress_comment", "").strip()
        assert len(reason) > 20, f"{skip['check_id']} in {skip['file_path']} is skipped without a reason"
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------- roles


def test_every_role_id_is_commented_with_its_role_name() -> None:
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            for guid in re.findall(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'", line):
                assert guid in ROLE_NAMES, f"{path.name}: unknown role id {guid}"
                assert line.rstrip().endswith(f"// {ROLE_NAMES[guid]}"), f"{path.name}: comment {guid} as its role"


def test_role_assignment_names_are_guid_of_scope_principal_and_role() -> None:
    for path in (APP / "rbac.bicep", APP / "ml.bicep"):
        for name, (scope, principal, _role_id, args) in role_assignments(path).items():
            assert args[0] == f"{scope}.id", f"{name}: guid() must start with the scope's id"
            assert args[-1].startswith("roles."), f"{name}: guid() must end with the role id"
            if not principal.endswith(".principalId"):  # a principal known only at deploy time is named instead
                assert principal in args, f"{name}: guid() must include the principal"


def test_app_identity_has_exactly_the_least_privilege_roles() -> None:
    got = {(scope, role_id) for scope, principal, role_id, _ in
           [*role_assignments(APP / "rbac.bicep").values(), *role_assignments(APP / "ml.bicep").values()]
           if principal == "appPrincipalId"}
    owner, contrib, reader = ("b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
                              "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1")
    assert got == {
        ("deploymentContainer", owner), ("hostsContainer", owner), ("secretsContainer", owner),  # host storage
        ("dataContainer", reader), ("scoringContainer", reader),  # read,
        ("dataContainer", contrib), ("scoringContainer", contrib),  # and write only the frozen copies (below)
        ("stateContainer", contrib), ("outputContainer", contrib),  # written
        ("topic", "d5a91429-5739-47e2-a06b-3470a27159e7"),  # EventGrid Data Sender
        ("workspace", "f6c7c914-8db3-469d-8ca1-694a8f32e121"),  # AzureML Data Scientist
        ("workspace", "43d0d8ad-25c7-4714-9337-8ba259a9fe05"),  # Monitoring Reader: endpoint metrics
    }


def test_the_app_writes_only_its_frozen_copies_into_the_data_and_scoring_containers() -> None:
    """Freezing a batch (shared/batches/freeze.py) copies into `.reflex-frozen/` (`FROZEN_ROOT`): the Contributor
    grant on the data and scoring containers carries a role assignment condition (version 2.0) that allows blob
    writes, appends and deletes only on that path (the format of learn.microsoft.com
    role-based-access-control/conditions-format)."""
    found = resources(APP / "rbac.bicep", "Microsoft.Authorization/roleAssignments")
    for name in ("appDataFrozenWriter", "appScoringFrozenWriter"):
        props = found[name]["config"]["properties"]
        assert props["conditionVersion"] == "2.0"
        text = parsed(APP / "rbac.bicep")["variables"]["frozenWritesOnly"]["value"]
        assert accessor(props["condition"]) == "frozenWritesOnly"
        for action in ("blobs/write", "blobs/add/action", "blobs/delete"):
            assert f"!(ActionMatches{{'Microsoft.Storage/storageAccounts/blobServices/containers/{action}'}})" in text
        assert ("@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith "
                f"'{FROZEN_ROOT}/'") in text
        assert text.count("OR") == 1 and "blobs/read" not in text  # reads stay as the Reader grant allows


def test_scopes_are_the_containers_they_name() -> None:
    containers = resources(APP / "rbac.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    expected = {"deploymentContainer": "deploymentContainerName", "hostsContainer": "azure-webjobs-hosts",
                "secretsContainer": "azure-webjobs-secrets", "dataContainer": "dataContainerName",
                "scoringContainer": "scoringContainerName", "stateContainer": "stateContainerName",
                "outputContainer": "outputContainerName", "deadLetterContainer": "deadLetterContainerName"}
    assert {k: v["config"]["name"] for k, v in containers.items()} == expected
    assert all(v["existing"] for v in containers.values())


def test_jobs_and_event_grid_get_their_data_roles() -> None:
    got = {(principal, scope, role_id) for scope, principal, role_id, _ in
           role_assignments(APP / "rbac.bicep").values()}
    contrib, reader = "ba92f5b4-2d11-453d-a403-e96b0029c9fe", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    for needed in [("computePrincipalId", "dataContainer", reader), ("computePrincipalId", "scoringContainer", reader),
                   ("computePrincipalId", "outputContainer", contrib),
                   ("workspacePrincipalId", "dataContainer", reader),
                   ("storageTopicPrincipalId", "deadLetterContainer", contrib),
                   ("workspaceTopicPrincipalId", "deadLetterContainer", contrib),
                   ("reflexTopicPrincipalId", "deadLetterContainer", contrib)]:
        assert needed in got, needed
    # nothing is granted on the whole account any more: no blob trigger, so the host needs no queue
    assert not any(scope == "storage" for _, scope, _ in got)


# ------------------------------------------------------------------------------------------ storage + plan


def test_reflex_storage_allows_no_shared_key() -> None:
    (app,) = resources(APP / "storage.bicep", "Microsoft.Storage/storageAccounts").values()
    props = app["config"]["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"


def test_workspace_storage_keeps_keys_for_azure_ml_with_the_reason_written_down() -> None:
    """#14.3: Azure ML with shared keys off on its own storage is preview and needs a user-assigned identity on the
    cluster (model outputs) and Table + Queue roles (parallel jobs): how-to-disable-local-auth-storage."""
    (ws_storage,) = resources(APP / "workspace.bicep", "Microsoft.Storage/storageAccounts").values()
    props = ws_storage["config"]["properties"]
    assert props["allowSharedKeyAccess"] is True
    assert props["allowBlobPublicAccess"] is False and props["minimumTlsVersion"] == "TLS1_2"
    (ws,) = resources(APP / "workspace.bicep", "Microsoft.MachineLearningServices/workspaces").values()
    assert ws["config"]["properties"]["systemDatastoresAuthMode"] == "accesskey"
    readme = (INFRA / "README.md").read_text()
    assert "how-to-disable-local-auth-storage" in readme and "preview" in readme
    # no data role on the workspace storage is left over from the keyless attempt
    assert "workspaceStorage" not in (APP / "ml.bicep").read_text()


def test_key_vault_purge_protection_and_the_teardown_promise_agree() -> None:
    """With purge protection a soft-deleted vault "can't be purged until the retention period has passed"
    (Key Vault soft-delete overview), so `azd down --purge` cannot free its name; the README must not say it does."""
    (kv,) = resources(APP / "workspace.bicep", "Microsoft.KeyVault/vaults").values()
    props = kv["config"]["properties"]
    assert props["enablePurgeProtection"] is True and props["softDeleteRetentionInDays"] == 7
    teardown = (INFRA / "README.md").read_text().split("## Tear down", 1)[1].split("\n## ", 1)[0]
    assert "purges the soft-deleted Key Vault" not in teardown
    assert "purge protection" in teardown and "7 days" in teardown


def test_storage_declares_every_container_including_dead_letters() -> None:
    containers = resources(APP / "storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    names = {r["config"]["name"] for r in containers.values()}
    assert {"deploymentContainerName", "azure-webjobs-hosts", "azure-webjobs-secrets", "dataContainerName",
            "scoringContainerName", "stateContainerName", "outputContainerName", "deadLetterContainerName"} == names


def test_function_app_is_flex_consumption_python_311_with_identity_deployment() -> None:
    path = APP / "function.bicep"
    (plan,) = resources(path, "Microsoft.Web/serverfarms").values()
    assert plan["config"]["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    (site,) = resources(path, "Microsoft.Web/sites").values()
    cfg = site["config"]
    assert cfg["identity"]["type"] == "UserAssigned"
    fac = cfg["properties"]["functionAppConfig"]
    assert fac["runtime"] == {"name": "python", "version": "3.11"}
    assert fac["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert cfg["properties"]["httpsOnly"] is True


def test_compute_cluster_scales_to_zero_and_datastores_are_credential_less() -> None:
    path = APP / "ml.bicep"
    (compute,) = resources(path, "Microsoft.MachineLearningServices/workspaces/computes").values()
    scale = compute["config"]["properties"]["properties"]["scaleSettings"]
    assert scale["minNodeCount"] == 0
    stores = resources(path, "Microsoft.MachineLearningServices/workspaces/datastores")
    assert {s["config"]["name"] for s in stores.values()} == {
        "dataDatastoreName", "scoringDatastoreName", "outputDatastoreName"}
    for s in stores.values():
        assert s["config"]["properties"]["credentials"] == {"credentialsType": "None"}


def _main_var(name: str) -> str:
    value = parsed(INFRA / "main.bicep")["variables"][name]["value"]
    return value if isinstance(value, str) else json.dumps(value)


def test_default_endpoint_and_compute_names_contain_the_resource_token() -> None:
    """#14.2: endpoint names are unique within a region, compute names across a region's computes, and a compute
    PUT overwrites an existing compute: every default name Reflex creates carries the deployment's token."""
    online, batch = _main_var("onlineEndpointName"), _main_var("batchEndpointName")
    assert "${resourceToken}" in online and "${resourceToken}" in batch and online != batch
    token = "abcdefghijk12"  # uniqueString() is 13 lower-case letters and digits
    from shared.core.settings import _ENDPOINT_RE
    for name in (online, batch):
        assert _ENDPOINT_RE.fullmatch(name.replace("${resourceToken}", token)), name
    cluster = _main_var("clusterName")
    assert "${resourceToken}" in cluster and "computeName" in cluster
    assert parsed(INFRA / "main.bicep")["parameters"]["computeName"]["default"] == ""
    default_cluster = re.search(r"'([^']*\$\{resourceToken\}[^']*)'", (INFRA / "main.bicep").read_text()
                                .split("var clusterName", 1)[1].splitlines()[0])[1]
    concrete = default_cluster.replace("${resourceToken}", token)
    # compute names: 3-24 characters, a letter first, a hyphen followed by a letter later
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{2,23}", concrete) and re.search(r"-[A-Za-z0-9]*[A-Za-z]", concrete)
    assert "'cpu-cluster'" not in (INFRA / "main.bicep").read_text()  # settings.py's shared default
    # the app is told those names, not settings.py's shared defaults
    settings = _app_settings()
    assert settings["REFLEX_ENDPOINTS"] == "${modelName}=${onlineEndpointName}"
    assert settings["REFLEX_BATCH_ENDPOINT"] == "batchEndpointName"
    assert settings["REFLEX_TRAINING_COMPUTE"] == settings["REFLEX_BATCH_COMPUTE"] == "computeName"
    calls = body(parsed(INFRA / "main.bicep")["modules"]["function"])["params"]
    assert (calls["onlineEndpointName"], calls["batchEndpointName"], calls["computeName"]) == (
        "onlineEndpointName", "batchEndpointName", "clusterName")
    assert body(parsed(INFRA / "main.bicep")["modules"]["ml"])["params"]["computeName"] == "clusterName"


def test_deployed_training_environment_is_pinned_like_the_job_environment() -> None:
    import yaml

    deployed = yaml.safe_load((APP / "train-conda.yml").read_text())
    job = yaml.safe_load((ROOT / "jobs" / "train" / "conda.yaml").read_text())
    assert deployed == job
    pins = next(d["pip"] for d in job["dependencies"] if isinstance(d, dict))
    assert all("==" in p for p in pins), pins


# ------------------------------------------------------------------------------------------------ Event Grid


def test_system_topics_on_the_storage_account_and_the_workspace() -> None:
    (st,) = resources(APP / "storage.bicep", "Microsoft.EventGrid/systemTopics").values()
    props = st["config"]["properties"]
    assert (accessor(props["source"]), props["topicType"]) == ("storage.id", "Microsoft.Storage.StorageAccounts")
    (ws,) = resources(APP / "ml.bicep", "Microsoft.EventGrid/systemTopics").values()
    props = ws["config"]["properties"]
    assert (accessor(props["source"]), props["topicType"]) == (
        "workspace.id", "Microsoft.MachineLearningServices.Workspaces")
    (topic,) = resources(APP / "topic.bicep", "Microsoft.EventGrid/topics").values()
    assert topic["config"]["properties"]["disableLocalAuth"] is True


SUBSCRIPTION_TYPES = ("Microsoft.EventGrid/systemTopics/eventSubscriptions",
                      "Microsoft.EventGrid/topics/eventSubscriptions")


def _subscriptions() -> dict[str, dict[str, Any]]:
    subs = {}
    for path in (APP / "subscriptions.bicep", APP / "workspace-subscriptions.bicep"):
        for type_ in SUBSCRIPTION_TYPES:
            for r in resources(path, type_).values():
                props = r["config"]["properties"]
                url = props["destination"]["properties"]["endpointUrl"]
                props["destination"]["properties"]["endpointUrl"] = interpolate(path, url)
                subs[r["config"]["name"]] = {**props, "_parent": r["config"]["parent"], "_type": type_}
    return subs


def test_subscriptions_deliver_each_event_type_to_its_function() -> None:
    subs = _subscriptions()
    webhook = "/runtime/webhooks/eventgrid?functionName="
    expected = {
        "reflex-on-data-blob": (["Microsoft.Storage.BlobCreated"], "on_data_blob", "hostKeys.eventgrid_extension",
                                "dataContainerName", "storageTopic"),
        "reflex-on-scoring-blob": (["Microsoft.Storage.BlobCreated"], "on_scoring_blob",
                                   "hostKeys.eventgrid_extension", "scoringContainerName", "storageTopic"),
        "reflex-on-run-event": (["Microsoft.MachineLearningServices.RunCompleted",
                                 "Microsoft.MachineLearningServices.RunStatusChanged"], "on_run_event", "eventGridKey",
                                None, "workspaceTopic"),
        "reflex-on-model-registered": (["Microsoft.MachineLearningServices.ModelRegistered"], "on_model_registered",
                                       "eventGridKey", None, "workspaceTopic"),
        # #14.8: the gate's own event too, from Reflex's custom topic
        "reflex-on-reflex-model-registered": (["Reflex.ModelRegistered"], "on_model_registered",
                                              "hostKeys.eventgrid_extension", None, "reflexTopic"),
    }
    assert set(subs) == set(expected)
    for name, (types, function, key, container, parent) in expected.items():
        props = subs[name]
        assert props["filter"]["includedEventTypes"] == types, name
        assert props["_parent"] == parent, name
        dest = props["destination"]
        assert dest["endpointType"] == "WebHook"
        url = dest["properties"]["endpointUrl"]
        assert url == "https://${functionAppHostName}" + webhook + function + "&code=${" + key + "}", name
        assert props["eventDeliverySchema"] == "EventGridSchema", name
        if container:
            assert props["filter"]["subjectBeginsWith"] == f"/blobServices/default/containers/${{{container}}}/blobs/"
        else:
            assert "subjectBeginsWith" not in props["filter"] and "advancedFilters" not in props["filter"]
    assert "blobs_extension" not in (APP / "subscriptions.bicep").read_text()  # no blob trigger is left


def test_blob_subscriptions_pass_only_the_calls_that_complete_a_blob() -> None:
    """storage-blob-event-overview: BlobCreated after CopyBlob, PutBlob, PutBlockList or FlushWithClose means the
    block blob is fully committed."""
    apis = parsed(APP / "subscriptions.bicep")["variables"]["blobCompletingApis"]["value"]
    assert sorted(apis) == sorted(["PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"])
    for name in ("reflex-on-data-blob", "reflex-on-scoring-blob"):
        flt, frozen = _subscriptions()[name]["filter"]["advancedFilters"]
        assert flt == {"operatorType": "StringIn", "key": "data.api", "values": "blobCompletingApis"}, name
        # the copies Reflex makes when it freezes a batch (shared/batches/freeze.py) are not delivered at all
        # (advanced filter operators and the `subject` key: learn.microsoft.com azure/event-grid/event-filtering)
        assert (frozen["operatorType"], frozen["key"]) == ("StringNotBeginsWith", "subject"), name
        (value,) = frozen["values"]
        assert f"/blobs/{FROZEN_ROOT}/" in json.dumps(value), name


def test_every_subscription_has_one_delivery_policy_and_dead_letters_to_the_dead_letter_container() -> None:
    for name, props in _subscriptions().items():
        assert props["retryPolicy"] == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}, name
        dest = props["destination"]["properties"]
        assert (dest["maxEventsPerBatch"], dest["preferredBatchSizeInKilobytes"]) == (1, 64), name
        dl = props["deadLetterWithResourceIdentity"]
        assert dl["identity"]["type"] == "SystemAssigned", name
        assert dl["deadLetterDestination"]["endpointType"] == "StorageBlob", name
        assert dl["deadLetterDestination"]["properties"]["blobContainerName"] == "deadLetterContainerName", name


def test_host_keys_are_read_from_the_function_host_at_deploy_time() -> None:
    keys = parsed(APP / "subscriptions.bicep")["variables"]["hostKeys"]["value"]["operator"]["operands"]
    call = keys["operand_1"]["function"]
    assert call["parameters"]["func_name"] == "listKeys"
    assert call["parameters"]["resource_identifier"] == "${functionAppId}/host/default"
    assert keys["operand_2"] == "systemKeys"
    assert "@secure" in (APP / "workspace-subscriptions.bicep").read_text()


def test_subscribe_script_passes_exactly_the_parameters_subscriptions_bicep_declares() -> None:
    script = (INFRA / "scripts" / "subscribe.sh").read_text()
    deploy = script[script.index("az deployment group create"):]
    passed = set(re.findall(r"\b([a-zA-Z]+)=\"\$", deploy.split("\n\n")[0]))
    assert passed == set(parsed(APP / "subscriptions.bicep")["parameters"])
    needed = set(script[script.index("for v in ") + 9:script.index("; do")].replace("\\", " ").split())
    outputs = set(parsed(INFRA / "main.bicep")["outputs"])
    assert needed <= outputs, f"subscribe.sh needs azd outputs main.bicep does not write: {sorted(needed - outputs)}"
    assert os.access(INFRA / "scripts" / "subscribe.sh", os.X_OK)
    subprocess.run(["bash", "-n", str(INFRA / "scripts" / "subscribe.sh")], check=True)


def test_azure_yaml_deploys_the_app_and_runs_the_hook_after_deploy() -> None:
    import yaml

    doc = yaml.safe_load((ROOT / "azure.yaml").read_text())
    (service,) = doc["services"].values()
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert "infra/scripts/subscribe.sh" in doc["hooks"]["postdeploy"]["posix"]["run"]
    assert (service_name := next(iter(doc["services"]))) in (APP / "function.bicep").read_text()
    assert f"'azd-service-name': '{service_name}'" in (APP / "function.bicep").read_text()


# --------------------------------------------------------------------------------------------- app settings


def _app_settings() -> dict[str, Any]:
    return parsed(APP / "function.bicep")["variables"]["appSettings"]["value"]


def test_app_settings_are_exactly_what_settings_py_and_the_host_need() -> None:
    written = set(_app_settings())
    declared = {f.metadata["env"] for f in SPEC}
    required = {f.metadata["env"] for f in SPEC if f.metadata["default"] is None and f.metadata["when"] in
                (None, "azureml")}
    unknown = written - declared - HOST_SETTINGS
    assert not unknown, f"app settings nobody reads: {sorted(unknown)}"
    missing = (required | MUST_WRITE | HOST_SETTINGS) - written
    assert not missing, f"app settings the app needs but the Bicep does not write: {sorted(missing)}"
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & written  # Flex: functionAppConfig


def test_every_percent_setting_used_by_a_trigger_is_written() -> None:
    written = set(_app_settings())
    used = set()
    for path in [ROOT / "function_app.py", *(ROOT / "functions").glob("*.py")]:
        if path.exists():
            used |= set(re.findall(r"%([A-Za-z0-9_]+)%", path.read_text()))
    assert used <= written, f"%SETTING% used by a trigger but not written: {sorted(used - written)}"


def test_the_written_settings_load_and_their_defaults_agree_with_settings_py() -> None:
    function_params = parsed(APP / "function.bicep")["parameters"]
    main_params = parsed(INFRA / "main.bicep")["parameters"]
    defaults = {f.metadata["env"]: f.metadata["default"] for f in SPEC}
    env = {}
    for name, value in _app_settings().items():
        if name in DERIVED:  # checked by test_default_endpoint_and_compute_names_contain_the_resource_token
            value = {"REFLEX_ENDPOINTS": "reflex-model=reflex-abcdefghijk12",
                     "REFLEX_BATCH_ENDPOINT": "reflex-batch-abcdefghijk12"}.get(name, "rfxabcdefghijk12-cpu")
        elif isinstance(value, str) and value in function_params:
            param = function_params[value]
            default = param.get("default") or main_params.get(value, {}).get("default")
            if name in defaults and defaults[name] and default is not None:
                assert default == defaults[name], f"{name}: Bicep default {default!r} != settings.py {defaults[name]!r}"
            value = default if isinstance(default, str) else "https://example.invalid/"
        env[name] = value if isinstance(value, str) else "azureml:reflex-train:1"
    env["REFLEX_TRAINING_CODE"] = "azureml:reflex-train-code:1"
    env["REFLEX_TRAINING_ENVIRONMENT"] = "azureml:reflex-train:1"
    settings = load(env)
    assert settings.platform == "azureml"
    assert settings.storage_blob_uri == "https://example.invalid/"
