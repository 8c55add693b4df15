"""Alerts that reach a person and the workbook (#19 items 3-5): infra/app/alerts.bicep and infra/app/workbook.json.

Why: an alert whose query names a field Reflex never writes never fires, and nothing in Azure says so. So the
fields are not a hand-kept list: they are what Reflex's own code writes, sent through the real OpenTelemetry
`LoggingHandler` and converted by the real Azure Monitor exporter into the envelope Application Insights stores
(`customDimensions` of a `traces` row). Event types are the ones the code publishes, outcomes the ones the runner
logs, event data keys the ones the publishing modules write. The resources' shapes are checked against the REST
examples in tests/fixtures/azure-monitor/ (each with its `_provenance`); checkov runs over the alerts template.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from shared.core import log as reflex_log
from shared.core import reaction
from shared.core.errors import PermanentError, TransientError
from tests.conftest import make_deps
from tests.test_infra import accessor, body, find_checkov, parsed

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
ALERTS = INFRA / "app" / "alerts.bicep"
WORKBOOK = INFRA / "app" / "workbook.json"
FIXTURES = ROOT / "tests" / "fixtures" / "azure-monitor"
SHARED = ROOT / "shared"

# the five alerts issue #19 asks for
EXPECTED_RULES = {"rollout-rolled-back", "job-failed", "event-dead-lettered", "rollout-past-deadline",
                  "reaction-failing-repeatedly"}
EXPLAIN = "python -m reflex explain <explain_id>"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


# ----------------------------------------------------------------- what reaches Application Insights, for real


def _rows(memory_records: Any) -> list[dict[str, Any]]:
    out = []
    for record in memory_records:
        envelope = _convert_log_to_envelope(record)
        data = envelope.data.base_data
        out.append({"type": envelope.data.base_type, "message": getattr(data, "message", ""),
                    "properties": dict(data.properties or {})})
    return out


@cache
def written() -> dict[str, Any]:
    """Run Reflex's runner and publisher through the real exporter pipeline; return the dimensions and the outcome
    values found on the `traces` rows."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger("reflex")
    level, saved = logger.level, dict(reaction.HANDLERS)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    before_export = None
    try:
        @reaction.handler("test.ops")
        def ops(payload: Any, deps: Any) -> reaction.Outcome:
            if payload.get("fail") == "permanent":
                raise PermanentError("batch heart/b1 has no label column")
            if payload.get("fail") == "transient":
                raise TransientError("throttled", retry_after=3)
            deps.publisher.publish("RolloutRolledBack", "endpoints/e/rollouts/m:2", {
                "endpoint": "e", "model": "m", "version": "2", "reason": "deadline passed while baking"})
            return reaction.Outcome("acted", "submitted", {"batch": "reflex-data/heart/b1", "job": "j1"})

        deps = make_deps()
        reaction.run("test.ops", {}, event_id="ev-0", deps=deps)  # before export_context: what was lost
        before_export = _rows(memory.get_finished_logs())
        memory.clear()
        reflex_log.export_context(logger)
        reaction.run("test.ops", {}, event_id="ev-1", deps=deps)
        reaction.run("test.ops", {"fail": "permanent"}, event_id="ev-2", deps=deps)
        with pytest.raises(TransientError):
            reaction.run("test.ops", {"fail": "transient"}, event_id="ev-3", deps=deps)
        rows = _rows(memory.get_finished_logs())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        reaction.HANDLERS.clear()
        reaction.HANDLERS.update(saved)
    dims = set().union(*(r["properties"] for r in rows))
    outcomes = {r["properties"]["outcome"] for r in rows if "outcome" in r["properties"]}
    return {"rows": rows, "before": before_export, "dimensions": dims, "outcomes": outcomes}


def test_context_and_outcome_fields_reach_custom_dimensions() -> None:
    """A logger's filter does not run for its children's records, so before export_context the reaction lines
    reached the exporter without function/event_id/key; after it they carry them, plus the outcome fields."""
    found = written()
    before = [r for r in found["before"] if r["message"].startswith("acted")]
    assert before and "event_id" not in before[0]["properties"]
    rows = {r["properties"].get("event_id"): r for r in found["rows"] if "outcome" in r["properties"]}
    acted = rows["ev-1"]["properties"]
    assert (acted["function"], acted["reaction"], acted["outcome"]) == ("test.ops", "test.ops", "acted")
    assert acted["explain_id"] == "reflex-data/heart/b1"  # the batch names the chain from its start
    assert rows["ev-1"]["type"] == "MessageData"  # a `traces` row
    dead = rows["ev-2"]["properties"]
    assert dead["outcome"] == "dead-lettered" and dead["explain_id"] == "ev-2" and dead["dead_letter"]
    assert rows["ev-3"]["properties"]["outcome"] == "transient-failure"
    (event,) = [r["properties"] for r in found["rows"] if "reflex_event" in r["properties"]]
    assert event["reflex_event"] == "Reflex.RolloutRolledBack" and event["explain_id"] == "m:2"
    assert json.loads(event["reflex_data"])["reason"] == "deadline passed while baking"
    assert event["event_id"] == "ev-1"  # the publishing run's context too


def test_explain_id_is_an_id_explain_takes() -> None:
    from reflex.explain import PRIORITY

    assert set(reflex_log.EXPLAIN_KINDS) <= set(PRIORITY)
    assert reflex_log.explain_id({"model": ["m:3"], "job": ["j"]}, "ev") == "j"
    assert reflex_log.explain_id({}, "ev") == "ev" and reflex_log.explain_id({}, "-") == "-"


# --------------------------------------------------------------------------- what the code publishes and logs


_EVENT_TYPE = re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]+)+")


def _type_names(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and _EVENT_TYPE.fullmatch(n.value)}


@cache
def published_types() -> set[str]:
    """`Reflex.<X>` for every event type the code hands to `publish(...)` or rollout_flow's `_publish(deps, ...)`:
    a literal argument, or the literals of what the variable passed was assigned in that function (`kind = ... if
    ... else "BatchScoringFailed"`)."""
    types: set[str] = set()
    for path in SHARED.rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            assigned: dict[str, set[str]] = {}
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            assigned.setdefault(target.id, set()).update(_type_names(node.value))
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                        "publish", "_publish"):
                    args = node.args[1:2] if getattr(node.func, "id", "") == "_publish" else node.args[:1]
                    for arg in args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            types.add(arg.value)
                        elif isinstance(arg, ast.Name):
                            types |= assigned.get(arg.id, set())
    return {f"Reflex.{t}" for t in types}


DATA_SHAPES = {"core/findings.py"}  # Reflex.HealthCheckFailed's data is `Finding.to_dict()`


@cache
def data_keys() -> set[str]:
    """Keys an event's data can carry: keyword names and literal dict keys in the modules that publish (a superset:
    the point is that a field the queries read is one some publisher writes)."""
    keys: set[str] = set()
    for path in SHARED.rglob("*.py"):
        text = path.read_text()
        # a publishing module, or one that builds a published event's data (a health finding's to_dict)
        if "publish(" not in text and path.relative_to(SHARED).as_posix() not in DATA_SHAPES:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Dict):
                keys |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            elif isinstance(node, ast.Call):
                keys |= {k.arg for k in node.keywords if k.arg}
    return keys


# ------------------------------------------------------------------------------------------ the templates


def rules() -> list[dict[str, Any]]:
    return parsed(ALERTS)["variables"]["alertRules"]["value"]


def rule_body() -> dict[str, Any]:
    """The body of the rules' `[for rule in alertRules: {...}]` loop."""
    return parsed(ALERTS)["resources"]["rules"]["config"]["config"]


def explain_hint() -> str:
    return parsed(ALERTS)["variables"]["explainHint"]["value"]


def workbook() -> dict[str, Any]:
    return json.loads(WORKBOOK.read_text())


def workbook_queries() -> dict[str, str]:
    return {item["name"]: item["content"]["query"] for item in workbook()["items"]
            if item["type"] == 3 and item["content"].get("queryType") == 0}


def readme_queries() -> dict[str, str]:
    """The README's "From an alert to the chain" query, as a reader would paste it."""
    blocks = re.findall(r"```kusto\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "README.md shows no kusto query"
    return {f"README {i}": "\n".join(line.strip() for line in b.splitlines()) for i, b in enumerate(blocks)}


def all_queries() -> dict[str, str]:
    return {**{f"rule {r['name']}": r["query"] for r in rules()},
            **{f"workbook {n}": q for n, q in workbook_queries().items()}, **readme_queries()}


def test_the_alert_rules_are_the_five_of_issue_19() -> None:
    assert {r["name"] for r in rules()} == EXPECTED_RULES


def test_every_rule_says_what_happened_and_names_the_explain_id() -> None:
    assert EXPLAIN in explain_hint()
    for rule in rules():
        description = rule["description"].replace("${explainHint}", explain_hint())
        assert EXPLAIN in description, rule["name"]
        assert len(description.split(". ")[0]) > 20, f"{rule['name']}: say what happened first"
        assert rule["dimensions"][0] == "explain_id", rule["name"]
        output = rule["query"].strip().splitlines()[-1]
        assert output.startswith("| project "), f"{rule['name']}: end with the columns the alert splits on"
        columns = {c.split("=")[0].strip() for c in re.split(r",(?![^(]*\))", output.removeprefix("| project "))}
        assert set(rule["dimensions"]) <= columns, f"{rule['name']}: dimensions {rule['dimensions']} vs {columns}"
        if rule["metricMeasureColumn"]:
            assert rule["metricMeasureColumn"] in columns


def test_queries_name_only_dimensions_reflex_writes() -> None:
    dims = written()["dimensions"]
    for name, query in all_queries().items():
        used = set(re.findall(r"customDimensions\.(\w+)", query)) | set(re.findall(r'customDimensions\["(\w+)"\]',
                                                                                   query))
        assert used, name
        assert used <= dims, f"{name} reads dimensions Reflex never writes: {sorted(used - dims)}"
        assert query.strip().split()[0] in ("traces", "let"), name
        assert "traces" in query, name


def test_queries_name_only_event_types_outcomes_and_data_keys_reflex_writes() -> None:
    types, outcomes, keys = published_types(), written()["outcomes"], data_keys()
    assert {"Reflex.RolloutRolledBack", "Reflex.TrainingFailed", "Reflex.BatchScoringFailed", "Reflex.RolloutFailed",
            "Reflex.HealthCheckFailed"} <= types  # the scan sees the publishers
    for name, query in all_queries().items():
        named = set(re.findall(r'"(Reflex\.\w+)"', query)) - {p for p in re.findall(r'startswith "(Reflex\.\w+)"',
                                                                                 query)}
        assert named <= types, f"{name}: events Reflex never publishes: {sorted(named - types)}"
        for prefix in re.findall(r'startswith "(Reflex\.\w+)"', query):
            assert any(t.startswith(prefix) for t in types), f"{name}: no event starts with {prefix}"
        for suffix in re.findall(r'endswith "(\w+)"', query):
            assert any(t.endswith(suffix) for t in types), f"{name}: no event ends with {suffix}"
        for clause in re.findall(r"customDimensions\.outcome\)\s*(?:==\s*\"[^\"]+\"|in \([^)]*\))", query):
            values = set(re.findall(r'"([^"]+)"', clause))
            assert values <= outcomes, f"{name}: outcomes the runner never logs: {sorted(values - outcomes)}"
        used = set(re.findall(r"\bdata\.(\w+)", query))
        assert used <= keys, f"{name}: event data keys no publisher writes: {sorted(used - keys)}"


def test_deadline_alert_matches_the_reasons_the_rollout_machine_and_health_give() -> None:
    """The deadline rule matches reasons by the word "deadline" and health findings by kind "rollout-overdue":
    both must be what the code writes."""
    from shared.rollout import health as rollout_health
    from shared.rollout.machine import Observation, Rollout, decide
    from shared.rollout.plan import Plan

    (rule,) = [r for r in rules() if r["name"] == "rollout-past-deadline"]
    assert 'has "deadline"' in rule["query"] and '"rollout-overdue"' in rule["query"]
    r = Rollout(endpoint="e", model="m", version="2", deployment="m-2", plan=Plan(), created_at=0.0,
                status="baking", started_at=0.0, deadline=100.0)
    action = decide(r, Observation(), 200.0)
    assert "deadline" in action.reason.split()  # the KQL `has` matches whole terms
    finding = rollout_health.rollout_finding("rollouts/e", r.to_dict(), 10_000.0, 14_400, 0.0)
    assert finding is not None and finding.kind == "rollout-overdue"
    # a rolled-back rule must not double-report what the deadline rule reports
    (rolled,) = [x for x in rules() if x["name"] == "rollout-rolled-back"]
    assert '!has "deadline"' in rolled["query"]


def test_rules_follow_the_scheduled_query_rule_2023_12_01_request() -> None:
    example = fixture("scheduledQueryRule-2023-12-01.json")["properties"]
    decl = parsed(ALERTS)["resources"]["rules"]
    assert decl["type"] == "Microsoft.Insights/scheduledQueryRules" and decl["api_version"] == "2023-12-01"
    assert decl["config"]["loop_type"]["detail"] == {"item_name": "rule", "array_name": "alertRules"}
    cfg = rule_body()
    assert cfg["kind"] == "LogAlert"
    props = cfg["properties"]
    allowed = set(example) | {"displayName", "autoMitigate"}  # both in the 2023-12-01 schema (getScheduledQueryRule)
    assert set(props) <= allowed, sorted(set(props) - allowed)
    (condition,) = props["criteria"]["allOf"]
    assert set(condition) <= set(example["criteria"]["allOf"][0]), sorted(set(condition))
    assert condition["failingPeriods"] == {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1}
    assert props["scopes"] == ["appInsightsId"] and props["autoMitigate"] is True
    assert set(props["actions"]) <= set(example["actions"])
    for rule in rules():
        assert 0 <= rule["severity"] <= 4 and re.fullmatch(r"PT\d+[MH]", rule["windowSize"]), rule["name"]


def test_action_group_only_when_an_email_is_given() -> None:
    """No address, no group: a group without receivers notifies nobody. The rules fire either way."""
    example = fixture("actionGroup-2023-01-01.json")["properties"]
    decl = parsed(ALERTS)["resources"]["actionGroup"]
    assert decl["api_version"] == "2023-01-01"
    assert decl["config"]["condition"] == "notify"
    notify = parsed(ALERTS)["variables"]["notify"]["value"]
    assert "empty" in json.dumps(notify) and "alertEmail" in json.dumps(notify)
    props = body(decl)["properties"]
    assert set(props) <= set(example)
    (receiver,) = props["emailReceivers"]
    assert set(receiver) <= set(example["emailReceivers"][0]) and receiver["emailAddress"] == "alertEmail"
    assert len(props["groupShortName"]) <= 12  # the action group short name limit
    actions = rule_body()["properties"]["actions"]
    assert actions["actionGroups"]["operator"]["operands"]["condition"] == "notify"
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["alertEmail"] == {"value": "${REFLEX_ALERT_EMAIL=}"}
    main = parsed(INFRA / "main.bicep")
    assert main["parameters"]["alertEmail"]["default"] == ""
    call = body(main["modules"]["alerts"])["params"]
    assert call["alertEmail"] == "alertEmail"
    assert accessor(call["appInsightsId"]) == "monitoring.outputs.appInsightsId"


def test_workbook_is_deployed_from_its_json_file() -> None:
    example = fixture("workbook-2023-06-01.json")
    decl = parsed(ALERTS)["resources"]["workbook"]
    assert decl["api_version"] == "2023-06-01"
    cfg = body(decl)
    assert cfg["kind"] == example["kind"] == "shared"
    props = cfg["properties"]
    assert set(props) <= set(example["properties"]), sorted(set(props) - set(example["properties"]))
    assert props["category"] == "workbook" and props["sourceId"] == "appInsightsId"
    replace = props["serializedData"]["function"]
    assert replace["type"] == "replace"
    load = replace["parameters"]["original_string"]["function"]
    assert load["type"] == "load_text_content" and load["parameters"]["file_path"] == WORKBOOK.name
    assert replace["parameters"]["old_string"] == "__APP_INSIGHTS_ID__"
    doc = workbook()
    assert doc["version"] == json.loads(example["properties"]["serializedData"])["version"] == "Notebook/1.0"
    assert doc["fallbackResourceIds"] == ["__APP_INSIGHTS_ID__"]
    assert WORKBOOK.stat().st_size < 2_000_000  # ARM's template limit is 4 MB; this file is inlined into it


def test_workbook_answers_the_questions_of_issue_19() -> None:
    names = {item["name"] for item in workbook()["items"]}
    assert {"outcomes-over-time", "traffic-over-time", "rollout-steps", "canary-latency", "canary-requests",
            "rollback-evidence", "failures", "chain"} <= names
    queries = workbook_queries()
    assert "render" not in " ".join(queries.values())  # the item's visualization decides
    assert "{ExplainId}" in queries["chain"]
    params = {p["name"] for item in workbook()["items"] if item["type"] == 9
              for p in item["content"]["parameters"]}
    for name, item in ((i["name"], i) for i in workbook()["items"]):
        text = json.dumps(item["content"])
        for used in re.findall(r"\{(\w+)(?::\w+)?\}", text):
            assert used in params, f"{name} uses parameter {{{used}}} that is not declared"
        if item["type"] == 3 and item["content"].get("queryType") == 0:
            assert item["content"]["crossComponentResources"] == ["__APP_INSIGHTS_ID__"], name
            assert item["content"]["timeContextFromParameter"] == "TimeRange", name


def test_canary_metrics_are_the_ones_each_rollout_step_is_gated_on() -> None:
    """shared/adapters/azureml/monitor.py queries RequestsPerMinute, RequestLatency and RequestLatency_P50 on the
    endpoint, filtered by deployment (names from the supported-metrics page it cites): the workbook charts the
    same, split by deployment."""
    source = (SHARED / "adapters" / "azureml" / "monitor.py").read_text()
    gated = {name for names in re.findall(r"metric_names=\[([^\]]*)\]", source)
             for name in re.findall(r'"(\w+)"', names)}
    assert gated == {"RequestsPerMinute", "RequestLatency", "RequestLatency_P50"}
    charted = set()
    for item in workbook()["items"]:
        if item["type"] == 10:
            content = item["content"]
            namespace = "microsoft.machinelearningservices/workspaces/onlineendpoints"
            assert content["resourceType"] == namespace and content["resourceIds"] == ["{Endpoint}"]
            for m in content["metrics"]:
                assert m["namespace"] == namespace and m["metric"].startswith(f"{namespace}--")
                assert m["splitBy"] == ["deployment"] and m["aggregation"] == 4  # Average, the only one listed
                charted.add(m["metric"].split("--", 1)[1])
    assert charted == gated


def test_checkov_parses_the_alerts_template_and_fails_nothing() -> None:
    """checkov (3.3.30) has no Bicep check for action groups, scheduled query rules or workbooks, so for this
    file it can only show that it parses and fails nothing; tests/test_infra.py runs it over all of infra/."""
    checkov = find_checkov()
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run([str(checkov), "-f", str(ALERTS), "--framework", "bicep", "--compact", "-o", "json",
                           "--skip-download"], capture_output=True, text=True, env=env, timeout=240, check=False)
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report.get("summary", report)  # with no check to run, checkov prints the summary alone
    assert summary["parsing_errors"] == 0 and summary["failed"] == 0, summary
    assert proc.returncode == 0, proc.stderr[-2000:]
