"""Every app setting Reflex reads, validated once into one typed, read-only object.

Why one place: a Functions app gets its configuration from app settings (environment variables). A setting
read deep inside a reaction fails late, at the first event that needs it, and the error names nothing. Here
each setting is declared once (name, parser, default, meaning); `load()` checks all of them at start and
raises one `SettingsError` that names every missing or malformed setting and says what is expected, including
combinations that would fail later (shared/core/settings_checks.py: gate metric against task, smoke request shape).
The same declarations produce the README's settings table (`python -m shared.core.settings --markdown`) and let
the infra tests check that the Bicep writes exactly the settings this module reads.

Connections follow the Functions host's rule: `AzureWebJobsStorage` is a connection string, or the
identity-based form `AzureWebJobsStorage__blobServiceUri` (+ `__clientId`) with managed identity.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from shared.core.settings_checks import cross_check

__all__ = ["Settings", "SettingsError", "load", "get_settings", "reset_cache", "SPEC", "markdown_table"]


class SettingsError(ValueError):
    """One or more app settings are missing or malformed; `problems` lists each as (setting, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {name}: {msg}" for name, msg in problems)
        super().__init__(f"Reflex cannot start: {len(problems)} app setting(s) need attention:\n{lines}")


# ----------------------------------------------------------------------------------------------- parsers
# Each parser takes the raw string and returns the typed value or raises ValueError with what is expected.

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])?$")
_AML_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_ENDPOINT_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")


def _text(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("expected a non-empty value")
    return value


def _optional_text(raw: str) -> str:
    return raw.strip()


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {lo} to {hi}, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}, got {value}")
        return value

    return parse


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number from {lo} to {hi}, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected a number from {lo} to {hi}, got {value}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _container(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", value):
        raise ValueError(
            f"expected a blob container name (3-63 lower-case letters, digits and single hyphens), got {raw!r}"
        )
    return value


def _aml_name(raw: str) -> str:
    value = raw.strip()
    if not _AML_NAME_RE.fullmatch(value):
        raise ValueError(f"expected an Azure ML asset name (letters, digits, '-', '_', '.'), got {raw!r}")
    return value


def _endpoint_name(raw: str) -> str:
    value = raw.strip()
    if not _ENDPOINT_RE.fullmatch(value):
        raise ValueError(
            f"expected an endpoint name (3-32 letters, digits and hyphens, starting with a letter), got {raw!r}"
        )
    return value


def _environment(raw: str) -> str:
    """A pinned environment reference: `azureml:name:version` or a registry URI with a version."""
    value = raw.strip()
    if "@latest" in value or value.endswith("/labels/latest"):
        raise ValueError(f"expected a pinned environment version (no @latest or labels/latest), got {raw!r}")
    if not (re.fullmatch(r"azureml:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+", value)
            or re.fullmatch(r"azureml://registries/[^/]+/environments/[^/]+/versions/[^/]+", value)):
        raise ValueError(
            "expected 'azureml:<name>:<version>' or "
            f"'azureml://registries/<r>/environments/<name>/versions/<v>', got {raw!r}"
        )
    return value


def _percent_steps(raw: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(p) for p in raw.replace(" ", "").split(",") if p)
    except ValueError:
        raise ValueError(f"expected comma-separated percentages such as 10,50,100, got {raw!r}") from None
    if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(f"expected strictly increasing percentages in 1..100 ending with 100, got {raw!r}")
    return steps


def _endpoint_map(raw: str) -> Mapping[str, str]:
    """`model=endpoint` pairs separated by commas: which online endpoint serves which registered model."""
    result: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        model, sep, endpoint = part.partition("=")
        if not sep:
            raise ValueError(f"expected model=endpoint pairs separated by commas, got {part!r}")
        result[_aml_name(model)] = _endpoint_name(endpoint)
    return result


def _ncrontab(raw: str) -> str:
    """Parsed by the parser the local host runs timers with (shared/core/ncrontab.py), so both agree."""
    from shared.core.ncrontab import parse

    value = raw.strip()
    try:
        parse(value)
    except ValueError as exc:
        raise ValueError(f"expected a six-field NCRONTAB schedule such as '0 */5 * * * *' "
                         f"({{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}): {exc}") from None
    return value


def _json_object(raw: str) -> Mapping[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected a JSON object: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _folder(raw: str) -> str:
    """Empty, or `<dataset>/<folder>`: two plain path segments."""
    value = raw.strip().strip("/")
    if value and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._=+-]{0,127}/[A-Za-z0-9_][A-Za-z0-9._=+-]{0,127}", value):
        raise ValueError(f"expected <dataset>/<folder> (two plain path segments), got {raw!r}")
    return value


def _url(raw: str) -> str:
    value = raw.strip()
    if value and not re.match(r"^https?://", value):
        raise ValueError(f"expected an http(s) URL, got {raw!r}")
    return value


# ------------------------------------------------------------------------------------------ declarations


def _s(env: str, parse: Callable[[str], Any], default: str | None, doc: str, *, secret: bool = False,
       when: str | None = None) -> Any:
    """Declare one setting: `default=None` means required (for `when` platforms only, if given)."""
    return field(metadata={"env": env, "parse": parse, "default": default, "doc": doc, "secret": secret,
                           "when": when})


@dataclass(frozen=True)
class Settings:
    """The validated configuration. Read-only: build a new one with `load(env)` to change it (tests do)."""

    # --- platform and identity
    platform: str = _s("REFLEX_PLATFORM", _choice("azureml", "local"), "azureml",
                       "Which ML platform adapter runs the reactions: `azureml` (Azure ML) or `local` (MLflow).")
    subscription_id: str = _s("AZUREML_SUBSCRIPTION_ID", _text, None, "Azure subscription of the workspace.",
                              when="azureml")
    resource_group: str = _s("AZUREML_RESOURCE_GROUP", _text, None, "Resource group of the workspace.",
                             when="azureml")
    workspace: str = _s("AZUREML_WORKSPACE", _text, None, "Azure ML workspace name.", when="azureml")
    client_id: str = _s("AZURE_CLIENT_ID", _optional_text, "",
                        "Client id of the user-assigned managed identity (empty: system identity or developer login).")
    mlflow_tracking_uri: str = _s("MLFLOW_TRACKING_URI", _url, "",
                                  "MLflow tracking server of the local platform, e.g. http://127.0.0.1:5000.",
                                  when="local")
    local_host_url: str = _s("REFLEX_LOCAL_HOST_URL", _url, "http://127.0.0.1:7071",
                             "Where the local platform delivers Azure ML events (the local host).")

    # --- storage (the app's own account: data, scoring, state)
    state_container: str = _s("REFLEX_STATE_CONTAINER", _container, "reflex-state",
                              "Container for Reflex's durable records (claims, arrivals, rollouts, dead letters, "
                              "ledger).")
    data_container: str = _s("REFLEX_DATA_CONTAINER", _container, "reflex-data",
                             "Container where training data lands as `<dataset>/<batch>/<files>`.")
    scoring_container: str = _s("REFLEX_SCORING_CONTAINER", _container, "reflex-scoring",
                                "Container where data to score lands as `<dataset>/<batch>/<files>`.")
    output_container: str = _s("REFLEX_OUTPUT_CONTAINER", _container, "reflex-outputs",
                               "Container for batch scoring outputs and drift baselines.")
    data_datastore: str = _s("REFLEX_DATA_DATASTORE", _aml_name, "reflexdata",
                             "Azure ML datastore registered on the data container.")
    scoring_datastore: str = _s("REFLEX_SCORING_DATASTORE", _aml_name, "reflexscoring",
                                "Azure ML datastore registered on the scoring container.")
    output_datastore: str = _s("REFLEX_OUTPUT_DATASTORE", _aml_name, "reflexoutputs",
                               "Azure ML datastore registered on the output container.")
    completion_marker: str = _s("REFLEX_COMPLETION_MARKER", _optional_text, "_SUCCESS",
                                "Blob name that marks a batch complete; empty: a batch completes after the "
                                "quiet window.")
    quiet_seconds: int = _s("REFLEX_QUIET_SECONDS", _int_range(10, 86_400), "300",
                            "Without a marker: seconds with no new blob after which a batch counts as complete.")
    sweep_schedule: str = _s("REFLEX_SWEEP_SCHEDULE", _ncrontab, "0 */1 * * * *",
                             "NCRONTAB schedule of the sweep that completes quiet batches and starts waiting ones.")

    # --- training
    model_name: str = _s("REFLEX_MODEL_NAME", _aml_name, "reflex-model",
                         "Registered model name that training produces.")
    experiment_name: str = _s("REFLEX_EXPERIMENT", _aml_name, "reflex",
                              "Experiment of Reflex's jobs (always set: the SDK default is the working folder).")
    training_mode: str = _s("REFLEX_TRAINING_MODE", _choice("command", "automl"), "command",
                            "`command` runs jobs/train/train.py; `automl` submits an AutoML job.")
    task: str = _s("REFLEX_TASK", _choice("classification", "regression"), "classification",
                   "Learning task.")
    label_column: str = _s("REFLEX_LABEL_COLUMN", _text, "label", "Column to predict.")
    training_compute: str = _s("REFLEX_TRAINING_COMPUTE", _aml_name, "cpu-cluster",
                               "Compute cluster for training jobs.")
    training_environment: str = _s("REFLEX_TRAINING_ENVIRONMENT", _environment, "azureml:reflex-train:1",
                                   "Pinned environment of the command job (never @latest).")
    training_code: str = _s("REFLEX_TRAINING_CODE", _optional_text, "",
                            "Registered code asset (`azureml:<name>:<version>`) holding jobs/train; "
                            "empty: the environment image carries it.")
    automl_primary_metric: str = _s("REFLEX_AUTOML_PRIMARY_METRIC", _text, "AUC_weighted",
                                    "AutoML primary metric.")
    automl_timeout_minutes: int = _s("REFLEX_AUTOML_TIMEOUT_MINUTES", _int_range(15, 10_080), "60",
                                     "AutoML experiment timeout.")
    automl_max_trials: int = _s("REFLEX_AUTOML_MAX_TRIALS", _int_range(1, 1000), "20", "AutoML trial budget.")
    automl_early_stopping: bool = _s("REFLEX_AUTOML_EARLY_STOPPING", _bool, "true", "AutoML early termination.")
    max_concurrent_training: int = _s("REFLEX_MAX_CONCURRENT_TRAINING", _int_range(1, 100), "2",
                                      "Reflex training jobs running at once; later batches wait for the sweep.")
    daily_training_cap: int = _s("REFLEX_DAILY_TRAINING_CAP", _int_range(0, 10_000), "0",
                                 "Training jobs per UTC day at most (0: no cap).")
    transient_retries: int = _s(
        "REFLEX_TRANSIENT_RETRIES", _int_range(0, 20), "3",
        "Times a training or scoring batch whose job failed for a transient reason (the platform or a dependency "
        "unreachable, throttled, 5xx, as the platform reports the job's failure) is run again, each after a longer "
        "wait (2, 4, 8 … minutes, at most an hour); 0: never. A failure in the user's script or data is never "
        "retried.")

    # --- registration gate
    gate_metric: str = _s("REFLEX_GATE_METRIC", _text, "auc",
                          "Metric compared with the champion's (as logged by the training run).")
    gate_direction: str = _s("REFLEX_GATE_DIRECTION", _choice("max", "min"), "max",
                             "`max`: higher is better; `min`: lower is better.")
    gate_min_margin: float = _s("REFLEX_GATE_MIN_MARGIN", _float_range(0.0, 1e9), "0.0",
                                "The challenger must beat the champion by more than this.")
    require_approval: bool = _s("REFLEX_REQUIRE_APPROVAL", _bool, "false",
                                "Register with reflex.approval=pending; roll out only once set to approved.")
    eval_data: str = _s("REFLEX_EVAL_DATA", _folder, "",
                        "A fixed evaluation set `<dataset>/<folder>` in REFLEX_DATA_CONTAINER on which the gate "
                        "scores challenger and champion (empty: the challenger's holdout rows).")
    trust_outside_models: bool = _s("REFLEX_TRUST_OUTSIDE_MODELS", _bool, "false",
                                    "Roll out a model registered outside Reflex without evaluating it against the "
                                    "champion (per model: tag `reflex.trusted=true`).")

    # --- guards
    paused: bool = _s("REFLEX_PAUSED", _bool, "false",
                      "Kill switch: reactions record what arrived and act on nothing (the CLI's pause also works).")
    dry_run: bool = _s("REFLEX_DRY_RUN", _bool, "false", "Decide and record, act on nothing.")

    # --- rollout
    endpoints: Mapping[str, str] = _s("REFLEX_ENDPOINTS", _endpoint_map, "reflex-model=reflex-endpoint",
                                      "Which online endpoint serves which model: `model=endpoint[,model=endpoint]`.")
    rollout_steps: tuple[int, ...] = _s("REFLEX_ROLLOUT_STEPS", _percent_steps, "10,50,100",
                                        "Traffic percentages of the new deployment, in order, ending with 100.")
    bake_seconds: int = _s("REFLEX_BAKE_SECONDS", _int_range(0, 604_800), "600",
                           "Time each traffic step runs before the checks allow the next.")
    mirror_percent: int = _s("REFLEX_MIRROR_PERCENT", _int_range(0, 50), "0",
                             "Mirror phase: percentage of live traffic copied to the new deployment (0: no mirror).")
    mirror_seconds: int = _s("REFLEX_MIRROR_SECONDS", _int_range(0, 604_800), "0", "Duration of the mirror phase.")
    retain_seconds: int = _s("REFLEX_RETAIN_SECONDS", _int_range(0, 2_592_000), "3600",
                             "How long the old deployment is kept at 0% after promotion before it is deleted.")
    max_error_rate: float = _s("REFLEX_MAX_ERROR_RATE", _float_range(0.0, 1.0), "0.02",
                               "Highest error rate of the new deployment that passes a check.")
    max_latency_ms: float = _s("REFLEX_MAX_LATENCY_MS", _float_range(1.0, 600_000.0), "5000",
                               "Backstop: highest average latency of the new deployment that passes a check "
                               "whatever the live one's (default: Azure ML's request timeout).")
    max_latency_ratio: float = _s("REFLEX_MAX_LATENCY_RATIO", _float_range(1.0, 100.0), "1.5",
                                  "Highest latency of the new deployment relative to the live one's over the "
                                  "same window (a slow machine slows both); a breach rolls back once the next "
                                  "whole minute confirms it.")
    min_requests: int = _s("REFLEX_MIN_REQUESTS", _int_range(0, 1_000_000), "0",
                           "Requests the new deployment must have served in a step before it may advance.")
    smoke_request: Mapping[str, Any] | None = _s("REFLEX_SMOKE_REQUEST", _json_object, "",
                                                 "JSON body of the smoke test request (empty: a row of the training "
                                                 "data).")
    instance_type: str = _s("REFLEX_INSTANCE_TYPE", _text, "Standard_DS3_v2", "Online deployment VM size.")
    instance_count: int = _s("REFLEX_INSTANCE_COUNT", _int_range(1, 100), "1", "Online deployment instances.")
    delete_on_rollback: bool = _s("REFLEX_DELETE_ON_ROLLBACK", _bool, "true",
                                  "Delete the new deployment after a rollback (false: keep it at 0% to inspect).")
    reconcile_schedule: str = _s("REFLEX_RECONCILE_SCHEDULE", _ncrontab, "0 */1 * * * *",
                                 "NCRONTAB schedule of the reconciler that advances rollouts and tracks jobs.")
    rollout_deadline_seconds: int = _s("REFLEX_ROLLOUT_DEADLINE_SECONDS", _int_range(60, 2_592_000), "14400",
                                       "A rollout not finished after this long is rolled back (one not yet "
                                       "started fails); health reports it if still open after the grace.")
    approval_timeout_seconds: int = _s("REFLEX_APPROVAL_TIMEOUT_SECONDS", _int_range(60, 31_536_000), "604800",
                                       "A rollout whose model is still awaiting approval (reflex.approval=pending) "
                                       "after this long ends as failed.")

    # --- monitoring
    health_schedule: str = _s("REFLEX_HEALTH_SCHEDULE", _ncrontab, "0 */5 * * * *", "Health check schedule.")
    health_remediate: bool = _s("REFLEX_HEALTH_REMEDIATE", _bool, "false",
                                "Roll back rollouts found stuck past their deadline.")
    health_grace_seconds: int = _s("REFLEX_HEALTH_GRACE_SECONDS", _int_range(60, 604_800), "600",
                                   "How long the health check leaves Reflex's own reactions (run events, sweep, "
                                   "batch tracker, rollout reconciler) to handle a failed or vanished job or an "
                                   "overdue rollout before reporting it; keep it above the sweep and reconcile "
                                   "intervals.")
    retention_days: int = _s("REFLEX_RETENTION_DAYS", _int_range(1, 3650), "30",
                             "Finished batch, scoring and retraining records stay readable (`reflex status --all`, "
                             "`explain`) this many days after they finished; then the health timer deletes them "
                             "by day (the newest trained and scored batches are kept for retraining and "
                             "re-scoring).")
    drift_schedule: str = _s("REFLEX_DRIFT_SCHEDULE", _ncrontab, "0 0 * * * *", "Drift check schedule.")
    drift_psi_threshold: float = _s("REFLEX_DRIFT_PSI_THRESHOLD", _float_range(0.0, 100.0), "0.25",
                                    "Population stability index above which a feature counts as drifted.")
    drift_min_rows: int = _s("REFLEX_DRIFT_MIN_ROWS", _int_range(1, 100_000_000), "100",
                             "Fewest recent rows a drift check needs.")
    drift_window_seconds: int = _s("REFLEX_DRIFT_WINDOW_SECONDS", _int_range(300, 31_536_000), "86400",
                                   "How far back a drift check reads inference data: scoring batches completed "
                                   "and request logs written in the last this many seconds, not yet checked.")
    drift_retrain: bool = _s("REFLEX_DRIFT_RETRAIN", _bool, "false", "Start retraining when drift is detected.")
    data_collector_path: str = _s("REFLEX_DATA_COLLECTOR_PATH", _optional_text, "",
                                  "`<container>/<prefix>` of online request logs to include in drift checks.")
    retrain_schedule: str = _s("REFLEX_RETRAIN_SCHEDULE", _ncrontab, "0 0 3 * * 0",
                               "Scheduled retraining (NCRONTAB), over the latest complete batch.")
    retrain_enabled: bool = _s("REFLEX_RETRAIN_ENABLED", _bool, "false", "Whether scheduled retraining runs.")
    ledger_index_schedule: str = _s("REFLEX_LEDGER_INDEX_SCHEDULE", _ncrontab, "0 */5 * * * *",
                                    "When the ledger's recent lines are indexed, so that `reflex explain` reads "
                                    "an index and a short tail, not the day.")

    # --- batch scoring
    batch_endpoint: str = _s("REFLEX_BATCH_ENDPOINT", _endpoint_name, "reflex-batch", "Batch endpoint name.")
    batch_compute: str = _s("REFLEX_BATCH_COMPUTE", _aml_name, "cpu-cluster", "Compute of the batch deployment.")
    batch_mini_batch_size: int = _s("REFLEX_BATCH_MINI_BATCH_SIZE", _int_range(1, 10_000), "10",
                                    "Files per mini-batch.")
    batch_instance_count: int = _s("REFLEX_BATCH_INSTANCE_COUNT", _int_range(0, 100), "0",
                                   "Instances per batch job (0: sized from the batch's file count).")
    batch_max_concurrency: int = _s("REFLEX_BATCH_MAX_CONCURRENCY", _int_range(1, 64), "2",
                                    "Parallel mini-batches per instance.")
    batch_schedule_enabled: bool = _s("REFLEX_BATCH_SCHEDULE_ENABLED", _bool, "false",
                                      "Also score the latest scoring batch on the schedule below.")
    batch_schedule: str = _s("REFLEX_BATCH_SCHEDULE", _ncrontab, "0 0 2 * * *", "Scheduled batch scoring.")

    # --- outbound events and telemetry
    topic_endpoint: str = _s("REFLEX_EVENTGRID_TOPIC_ENDPOINT", _url, "",
                             "Custom Event Grid topic for Reflex.* events (empty: not published).")
    topic_key: str = _s("REFLEX_EVENTGRID_TOPIC_KEY", _optional_text, "",
                        "Access key of that topic, for local use only; in Azure the managed identity is used.",
                        secret=True)
    appinsights: str = _s("APPLICATIONINSIGHTS_CONNECTION_STRING", _optional_text, "",
                          "Export logs and traces to Application Insights when set.", secret=True)
    trace_file: str = _s("REFLEX_TRACE_FILE", _optional_text, "",
                         "Write the reactions' OpenTelemetry spans to this file, one OTLP/JSON request per line "
                         "(the local stack sets it; empty: no file).")

    # --- storage connection (resolved from AzureWebJobsStorage or its identity-based form)
    storage_connection: str = field(default="", repr=False)
    storage_blob_uri: str = field(default="")

    def endpoint_for(self, model_name: str) -> str | None:
        """The online endpoint configured for a registered model, or None when the model is not configured."""
        return self.endpoints.get(model_name)


SPEC = tuple(f for f in fields(Settings) if "env" in f.metadata)

_STORAGE = "AzureWebJobsStorage"


def _storage(env: Mapping[str, str], problems: list[tuple[str, str]]) -> dict[str, str]:
    conn = env.get(_STORAGE, "").strip()
    uri = env.get(f"{_STORAGE}__blobServiceUri", "").strip()
    if not conn and not uri:
        problems.append((_STORAGE, f"expected a connection string, or {_STORAGE}__blobServiceUri for a "
                                   "managed-identity connection"))
    elif uri and not uri.startswith(("https://", "http://")):
        problems.append((f"{_STORAGE}__blobServiceUri", f"expected an http(s) URL, got {uri!r}"))
    return {"storage_connection": conn, "storage_blob_uri": uri}


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Validate every setting in `env` (default: the process environment) and return the typed object.

    Raises:
        SettingsError: naming every missing or malformed setting at once, with what is expected.
    """
    env = os.environ if env is None else env
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    platform = (env.get("REFLEX_PLATFORM") or "azureml").strip().lower()
    for f in SPEC:
        meta = f.metadata
        raw = env.get(meta["env"])
        applies = meta["when"] is None or meta["when"] == platform
        required = applies and (meta["default"] is None or meta["when"] is not None)
        if raw is None or (required and not raw.strip()):
            if required:
                problems.append((meta["env"], f"required: {meta['doc']}"))
                continue
            raw = meta["default"] or ""
        if not applies and not raw.strip():
            values[f.name] = ""
            continue
        try:
            values[f.name] = meta["parse"](raw)
        except ValueError as exc:
            problems.append((meta["env"], str(exc)))
    values.update(_storage(env, problems))
    problems += cross_check(values)
    if not problems and values["mirror_percent"] and not values["mirror_seconds"]:
        problems.append(("REFLEX_MIRROR_SECONDS", "expected a duration > 0 when REFLEX_MIRROR_PERCENT is set"))
    if problems:
        raise SettingsError(problems)
    return Settings(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (at start in the Functions worker)."""
    return load()


def reset_cache() -> None:
    """Forget the cached settings (tests and the local host change the environment)."""
    get_settings.cache_clear()


def markdown_table() -> str:
    """The README's settings table, generated from the declarations so the two cannot drift."""
    rows = ["| setting | default | meaning |", "|---|---|---|",
            f"| `{_STORAGE}` | required | Storage connection string, or `{_STORAGE}__blobServiceUri` "
            f"(+ `__clientId`, `__credential=managedidentity`) in Azure. |"]
    for f in SPEC:
        meta = f.metadata
        default = "required" if meta["default"] is None else (f"`{meta['default']}`" if meta["default"] else "empty")
        if meta["when"]:
            default += f" (when `{meta['when']}`)" if meta["default"] is None else f"; required when `{meta['when']}`"
        rows.append(f"| `{meta['env']}` | {default} | {meta['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - a developer's convenience
    import sys

    if "--markdown" in sys.argv:
        print(markdown_table())
    else:
        try:
            print(load())
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            raise SystemExit(2) from None
