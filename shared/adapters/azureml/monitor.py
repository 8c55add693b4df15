"""Azure Monitor's deployment metrics and the workspace region's quota: what a rollout's health checks read.

Metric names, aggregations and dimensions as the supported-metrics page lists them (see
`MonitorMixin.get_deployment_metrics`); quota keeps the 20% Azure ML reserves for upgrades (`cores_needed`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.adapters.azureml.base import PlatformBase, field
from shared.core.errors import PermanentError
from shared.core.platform import DeploymentMetrics, QuotaCheck, cores_needed

__all__ = ["MonitorMixin", "metrics_from_monitor"]


class MonitorMixin(PlatformBase):
    """Deployment metrics (Azure Monitor) and VM quota (the SDK's usage and size lists)."""

    def _metrics(self) -> Any:
        if self._metrics_client is None:
            from azure.monitor.query import MetricsQueryClient

            self._metrics_client = MetricsQueryClient(self.credential, retry_total=3)
        return self._metrics_client

    def get_deployment_metrics(self, endpoint: str, deployment: str, *,
                               window_seconds: int) -> DeploymentMetrics:
        """Azure Monitor, on the endpoint resource, filtered to one deployment; see `metrics_from_monitor`.

        Metric names, aggregations and dimensions as the supported-metrics page lists them for
        Microsoft.MachineLearningServices/workspaces/onlineEndpoints (MicrosoftDocs/azure-monitor-docs
        articles/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-
        onlineendpoints-metrics.md @ 0e7def83): `RequestsPerMinute` (Count, aggregation Average; dimensions
        deployment, statusCode, statusCodeClass, modelStatusCode) and `RequestLatency` (Milliseconds, Average;
        dimension deployment), and with the latter, in the same query, `RequestLatency_P50` ("the average P50
        request latency": Milliseconds, Average; dimension deployment), the median the canary is judged on
        (#18.6). There is no Total: asking for it returns no value, which read as zero requests.
        Only the listed Average is asked for (an older revision of the page also listed Count; the current one
        does not), so the query cannot be refused for an unsupported aggregation. Two queries, as the dimensions
        differ.
        """
        from azure.monitor.query import MetricAggregationType

        what = f"metrics of {endpoint}/{deployment}"
        resource = f"{self.scope}/onlineEndpoints/{endpoint}"
        span = timedelta(seconds=window_seconds)
        dep = deployment.replace("'", "''")
        client = self._metrics()
        counts = self._call(what, lambda: client.query_resource(
            resource, metric_names=["RequestsPerMinute"], timespan=span, granularity=timedelta(minutes=1),
            aggregations=[MetricAggregationType.AVERAGE],
            filter=f"deployment eq '{dep}' and statusCodeClass eq '*'"))
        latency = self._call(what, lambda: client.query_resource(
            resource, metric_names=["RequestLatency", "RequestLatency_P50"], timespan=span,
            granularity=timedelta(minutes=1), aggregations=[MetricAggregationType.AVERAGE],
            filter=f"deployment eq '{dep}'"))
        return metrics_from_monitor(counts, latency, window_seconds)

    def check_quota(self, instance_type: str, instance_count: int) -> QuotaCheck:
        """Cores of the VM family free in the workspace's region (usage API) vs what the deployment needs, with the
        20% Azure ML reserves for upgrades (`shared.core.platform.cores_needed`)."""
        location, _ = self._workspace_info()
        what = f"quota for {instance_type}"
        sizes = self._call(what, lambda: list(self.ml.compute.list_sizes(location=location))) or []
        size = next((s for s in sizes if str(s.name).lower() == instance_type.lower()), None)
        if size is None:
            raise PermanentError(f"quota: unknown instance type {instance_type} in {location}")
        family = str(size.family)
        cores = int(field(size, "v_cp_us", "vCPUs") or 0)
        usages = self._call(what, lambda: list(self.ml.compute.list_usage(location=location))) or []

        def usage_name(u: Any) -> str:
            name = u.name
            return str(name.get("value") if isinstance(name, dict) else getattr(name, "value", name))

        usage = next((u for u in usages if usage_name(u) == family), None)
        used = int(field(usage, "current_value", "currentValue") or 0) if usage else 0
        limit = int(field(usage, "limit") or 0) if usage else 0
        return QuotaCheck(instance_type, family, cores_needed(cores, instance_count), used, limit)


def _dimension(series: Any, name: str) -> str:
    """A series' dimension value; Azure Monitor returns dimension names lower-cased (`"blobtype"` in the REST
    example GetMetric.json), so the name is matched without case."""
    values = getattr(series, "metadata_values", None) or {}
    return str(next((v for k, v in values.items() if str(k).lower() == name.lower()), "") or "")


def metrics_from_monitor(counts: Any, latency: Any, window_seconds: int) -> DeploymentMetrics:
    """Requests, 5xx errors, mean and median latency from two azure-monitor-query `MetricsQueryResult`s.

    A point of `RequestsPerMinute` at PT1M grain carries `average`: "the number of requests sent to online
    endpoint within a minute", i.e. that minute's requests. Where the answer also carries `count` (samples in the
    point, as the REST example does when asked for it), average x count is the sum of the samples (the Total the
    metric does not offer); without it a point is one sample. A point with no `average` is a minute without
    samples (the REST example answers `count: 0` and no average). No point with a value in any series is "no data
    yet" (`has_data` False), never zero requests: Azure Monitor ingests with a delay, and a canary that serves
    traffic shows none for its first minutes.

    Latency points are one minute each (`RequestLatency`: that minute's mean, `RequestLatency_P50`: its median);
    over the window each minute weighs by the requests it served, when every latency minute has its count: a
    minute that held only the smoke test's one request must not weigh as much as a minute of traffic (#18.6).
    """
    requests = errors = 0.0
    seen = False
    per_minute: dict[Any, float] = {}
    for metric in getattr(counts, "metrics", None) or []:
        for series in metric.timeseries or []:
            values = [(p.timestamp, p.average * (p.count if p.count else 1)) for p in series.data or []
                      if p.average is not None]
            if not values:
                continue
            seen = True
            n = sum(v for _, v in values)
            for at, v in values:
                per_minute[at] = per_minute.get(at, 0.0) + v
            requests += n
            if _dimension(series, "statusCodeClass").startswith("5"):
                errors += n
    by_name: dict[str, list[tuple[Any, float]]] = {}
    for metric in getattr(latency, "metrics", None) or []:
        by_name.setdefault(str(getattr(metric, "name", "") or ""), []).extend(
            (p.timestamp, p.average) for s in metric.timeseries or [] for p in s.data or [] if p.average is not None)
    return DeploymentMetrics(round(requests), round(errors), _over_window(by_name.get("RequestLatency"), per_minute),
                             window_seconds, has_data=seen,
                             latency_p50_ms=_over_window(by_name.get("RequestLatency_P50"), per_minute))


def _over_window(points: list[tuple[Any, float]] | None, per_minute: dict[Any, float]) -> float | None:
    """One value for the window from per-minute points: weighted by each minute's requests where all are known."""
    if not points:
        return None
    if all(per_minute.get(at, 0.0) > 0 for at, _ in points):
        total = sum(per_minute[at] for at, _ in points)
        return sum(value * per_minute[at] for at, value in points) / total
    return sum(value for _, value in points) / len(points)
