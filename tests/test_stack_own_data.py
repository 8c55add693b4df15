"""A new user's own data on the local stack (#15's "done when"): a regression dataset the repo does not ship,
generated here with its own label column, configured the way the README tells a user (`local.settings.json`
`Values`), put in with `reflex upload`, then trained, gated, rolled out and served over HTTP; a second batch with
broken rows shows in `reflex status` as a failure with its reason. Slow (training, bake): run with `-m stack`."""

from __future__ import annotations

import io
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack_support import LiveStack, live_stack, wait_for

pytestmark = [pytest.mark.timeout(600), pytest.mark.stack]

MODEL, ENDPOINT, DATASET, LABEL = "diabetes-like", "diabetes-like-ep", "patients", "progression"
# what a user writes into local.settings.json for their own data (README "Your own data")
USER_SETTINGS = {"REFLEX_MODEL_NAME": MODEL, "REFLEX_ENDPOINTS": f"{MODEL}={ENDPOINT}", "REFLEX_TASK": "regression",
                 "REFLEX_LABEL_COLUMN": LABEL, "REFLEX_GATE_METRIC": "rmse", "REFLEX_GATE_DIRECTION": "min",
                 "REFLEX_SMOKE_REQUEST": "", "REFLEX_BATCH_ENDPOINT": f"{MODEL}-batch"}


@pytest.fixture
def live(tmp_path: Path, blob_service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    from local.env import ROOT

    root = tmp_path / "run"
    root.mkdir()
    settings = json.loads((ROOT / "local.settings.example.json").read_text())
    settings["Values"].update(USER_SETTINGS)
    (root / "local.settings.json").write_text(json.dumps(settings, indent=2))
    # the process environment wins over the file (as func start does): keep this test's own REFLEX_* out of it
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REFLEX_")}
    yield from live_stack(root, monkeypatch.setenv, environ=environ)


def cli(live: LiveStack, *argv: str) -> tuple[int, dict[str, Any]]:
    from reflex.cli import main

    out = io.StringIO()
    code = main(["--json", *argv], deps=live.deps, stdout=out)
    return code, json.loads(out.getvalue())


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    path.write_text(",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows))


def generated(n: int, seed: int) -> list[dict[str, Any]]:
    from sklearn.datasets import make_regression

    features, target = make_regression(n_samples=n, n_features=5, noise=5.0, random_state=seed)
    return [{**{f"m{i}": round(float(v), 4) for i, v in enumerate(row)}, LABEL: round(float(y), 3)}
            for row, y in zip(features, target, strict=True)]


def test_a_users_own_regression_data_is_trained_gated_rolled_out_served_and_a_broken_batch_fails_in_status(
        live: LiveStack, tmp_path: Path) -> None:
    from shared.rollout.flow import rollout_key

    assert live.deps.settings.label_column == LABEL and live.deps.settings.task == "regression"
    first = tmp_path / "first"
    first.mkdir()
    rows = generated(240, seed=11)
    write_rows(first / "part-0.csv", rows[:120])
    write_rows(first / "part-1.csv", rows[120:])
    code, result = cli(live, "upload", str(first), "--dataset", DATASET, "--batch", "b1")
    assert code == 0 and result["marker_status"] == "written", result

    def ended() -> dict[str, Any] | None:
        record = live.deps.state.get(rollout_key(ENDPOINT))
        done = ("promoted", "done", "failed", "rolled_back")
        return dict(record.value) if record and record.value.get("status") in done else None

    rollout = wait_for(f"the rollout of {MODEL}:1 to end", ended, timeout=360)
    assert rollout["status"] in ("promoted", "done"), rollout.get("reason")
    model = live.deps.platform.get_model(MODEL, "1")
    assert model is not None and "rmse" in model.properties.get("reflex.gate", "") + json.dumps(model.properties)
    # served: a client's request in Azure ML's documented split shape, answered by the new deployment
    features = [c for c in rows[0] if c != LABEL]
    body = {"input_data": {"columns": features, "index": [0], "data": [[rows[0][c] for c in features]]}}
    url = f"{live.env['REFLEX_LOCAL_SERVING_URL']}/endpoints/{ENDPOINT}/score"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert response.status == 200 and len(answer) == 1 and isinstance(answer[0], float)

    broken = tmp_path / "broken"
    broken.mkdir()
    # text in a numeric label column ("n/a" would be read as missing and the row dropped, as train.py documents)
    bad = [{**r, LABEL: "unknown" if i % 3 == 0 else r[LABEL]} for i, r in enumerate(generated(90, seed=12))]
    write_rows(broken / "part-0.csv", bad)
    code, result = cli(live, "upload", str(broken), "--dataset", DATASET, "--batch", "b2")
    assert code == 0, result

    def failure() -> dict[str, Any] | None:
        _code, status = cli(live, "status")
        return next((f for f in status.get("failures", []) if f.get("kind") == "training"
                     and f.get("id", "").endswith(f"/{DATASET}/b2")), None)

    failed = wait_for("the broken batch's failure in status", failure, timeout=300)
    assert f"label column '{LABEL}' is not numeric" in failed["reason"], failed
