"""On the local stack (real MLflow, Azurite, host): data put in with `reflex upload`, trained, and rolled out with
no smoke request configured (a row of the model's own training data passes the real model's input schema).
Slow (training, bake times): run with `-m stack`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack_support import LiveStack, live_stack, wait_for

pytestmark = [pytest.mark.timeout(600), pytest.mark.stack]

MODEL, ENDPOINT = "heart-failure", "heart-failure-ep"


@pytest.fixture
def live(tmp_path: Path, blob_service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    yield from live_stack(tmp_path / "run", monkeypatch.setenv, {"REFLEX_SMOKE_REQUEST": ""})


def cli(live: LiveStack, *argv: str) -> tuple[int, dict[str, Any]]:
    from reflex.cli import main

    out = io.StringIO()
    code = main(["--json", *argv], deps=live.deps, stdout=out)
    return code, json.loads(out.getvalue())


def test_uploaded_with_reflex_upload_trained_and_smoke_tested_with_its_own_row(live: LiveStack,
                                                                                tmp_path: Path) -> None:
    from local.sampledata import generate, to_csv_bytes
    from shared.rollout.flow import rollout_key
    from shared.rollout.plan import deployment_name

    folder = tmp_path / "heart"
    folder.mkdir()
    rows = generate(300, seed=3)
    (folder / "part-0.csv").write_bytes(to_csv_bytes(rows[:150]))
    (folder / "part-1.csv").write_bytes(to_csv_bytes(rows[150:]))
    code, result = cli(live, "upload", str(folder), "--dataset", "heart", "--batch", "u1")
    assert code == 0 and result["uploaded"] == ["part-0.csv", "part-1.csv"], result
    assert result["marker_status"] == "written"

    deployment = deployment_name(MODEL, "1")

    def promoted() -> dict[str, Any] | None:
        record = live.deps.state.get(rollout_key(ENDPOINT))
        return dict(record.value) if record and record.value.get("status") in ("promoted", "done", "failed",
                                                                              "rolled_back") else None

    rollout = wait_for("the rollout of v1 to end", promoted, timeout=300)
    assert rollout["status"] in ("promoted", "done"), rollout.get("reason")
    # the smoke row comes from the frozen copy the job trained on (shared/batches/freeze.py), not the live folder
    source = rollout["smoke"]["source"]
    assert rollout["smoke"]["ok"] is True and "/.reflex-frozen/heart/u1/" in source, source
    assert source.endswith("/part-0.csv"), source
    endpoint = live.deps.platform.get_endpoint(ENDPOINT)
    assert endpoint is not None and endpoint.traffic.get(deployment) == 100
    code, result = cli(live, "rollout", f"{MODEL}:1")
    assert code == 2 and "already serves all traffic" in result["message"]
    code, result = cli(live, "train", "heart/u1")
    assert code == 2 and "already trained" in result["message"]
