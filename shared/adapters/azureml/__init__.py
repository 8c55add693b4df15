"""The Azure ML adapter: `AzureMLPlatform` implements `shared.core.platform.MLPlatform` with azure-ai-ml.

Modules by concern: `base` (the client, error translation, workspace), `http` (Reflex's own HTTP on azure-core:
MLflow REST and scoring), `jobs`, `models`, `endpoints` (online), `batch`, `monitor` (metrics, quota), and
`platform` (the class that puts them together, and the per-worker cache).

Why one package: azure-ai-ml costs ~1.6 s and ~100 MiB to import, has traps that silently do the wrong thing
(../shared/reference/azure-ai-ml.md), and its errors need one translation. So nothing else in the app imports
`azure.ai.ml` (tests/test_layering.py enforces it) and this package imports it only inside the methods that
need it: a reaction that skips an event never pays for it.

The traps, and what this package does about each (each has a contract test in tests/test_azureml_contract.py):

* a reused job name answers 400 UserError "already exists", not 409: `submit_training` PUTs first and, on that
  answer, GETs the existing job and returns it (idempotent, race-safe, and the happy path stays at one request:
  data asset PUT + job PUT = two requests per submission). A GET-first pattern would cost a third request on
  every submission to save one on the rare retry;
* `command()` lower-cases names: names must already be lower case, else `PermanentError` (a job named
  differently from its idempotency key could never be found again);
* `experiment_name` defaults to the working folder (`wwwroot` on Functions): always set from the request;
* `<env>@latest` costs a lookup and resolves differently over time: only pinned environments are accepted;
* model auto-versioning is read-then-PUT and races: versions are always explicit;
* the SDK strips 0% traffic entries and a PUT replaces the whole endpoint: traffic and mirror are read from
  the endpoint, modified as a whole, validated with `traffic_problems` and written back in the same entity;
  `begin_create_endpoint` never re-sends an existing endpoint (that would reset its traffic); a deployment is
  deleted only when it has 0% live and 0% mirrored traffic;
* `online_endpoints.invoke` mutates a class-level header dict, so a deployment name leaks into later calls:
  `invoke` calls the scoring URI itself with the deployment header set per call, and the batch invoke (which
  goes through the SDK) restores the SDK's header dict afterwards;
* `begin_*` never waits on `.result()`: it begins, returns, and a timer polls `get_*`. The SDK's poller may
  keep polling in a daemon thread; its interval is the client's `polling_interval` (settable, so tests and
  the benchmark never sleep).

* endpoint names are unique per Azure region: an "already exists" (or "There is already an endpoint with this
  name") answer to a create is success only when the endpoint is then found here, tagged `reflex.managed`; an
  existing endpoint without the tag is never redefined. Both are `PermanentError`s naming `REFLEX_ENDPOINTS` /
  `REFLEX_BATCH_ENDPOINT`. Computes are only ever named, never created or changed;
* AutoML's model output is `best_model` (`model_output`), declared on the job after construction (the builder's
  `outputs=` keyword loses the type); models register from `azureml://jobs/<job>/outputs/<output>/paths/`
  (`job_output_uri`, the SDK's JOB_URI_FORMAT);
* Azure Monitor serves `RequestsPerMinute` with Average (and Count), not Total; a missing series is "no data yet"
  (`metrics_from_monitor`), never zero requests;
* quota keeps the 20% Azure ML reserves for upgrades (`cores_needed`).

Errors are mapped once, in `base.PlatformBase._call` (`http.DataPlane.send` for Reflex's own HTTP): 404 -> the
protocol's "absent" (`None`) where the protocol says so, "already exists" -> idempotent success,
408/429/5xx/connection -> `TransientError(retry_after)`, auth and validation -> `PermanentError` naming the
resource (`shared.core.errors.map_azure_error`).

Job metrics come from the workspace's MLflow tracking server (azure-ai-ml has no metrics API) through one REST
call (`runs/get`) with the same credential on azure-core's pipeline (`http`: cached token, retries honouring
Retry-After), so neither mlflow nor azureml-mlflow is imported here. Deployment
metrics come from Azure Monitor (`azure-monitor-query`), quota from the workspace location's usage and VM size
lists the SDK exposes.
"""

from shared.adapters.azureml.base import ARM_SCOPE, ML_SCOPE
from shared.adapters.azureml.jobs import TRAIN_COMMAND
from shared.adapters.azureml.monitor import metrics_from_monitor
from shared.adapters.azureml.platform import AzureMLPlatform

__all__ = ["ARM_SCOPE", "ML_SCOPE", "TRAIN_COMMAND", "AzureMLPlatform", "metrics_from_monitor"]
