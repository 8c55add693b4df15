"""`python -m reflex upload` on Azurite: files first, marker last, idempotent re-runs, and the batch trains once.

The command runs through `reflex.cli.main` (and once as `python -m reflex` in a subprocess); what it stored is
then delivered, blob by blob, to the real data-arrival reaction on the fake platform (tests/real_chain.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local.host.blobs import blob_created_event
from reflex.upload import BLOCK_BYTES, default_batch_id
from shared.batches import manifest
from shared.batches.record import ArrivalRecord
from tests.conftest import AZURITE, ROOT, Clock
from tests.real_chain import World, make_world
from tests.test_cli import cli, cli_json

ROWS = b"age,label\n61,1\n45,0\n"


@pytest.fixture
def world(container_factory: Callable[[str], Any], clock: Clock) -> World:
    return make_world(container_factory, clock, REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1")


def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "heart"
    (root / "part-1").mkdir(parents=True)
    (root / "part-0.csv").write_bytes(ROWS)
    (root / "part-1" / "rows.csv").write_bytes(ROWS + b"70,1\n")
    (root / ".DS_Store").write_bytes(b"x")
    (root / "notes.txt").write_bytes(b"not data")
    return root


def stored(container: Any, prefix: str) -> dict[str, Any]:
    return {b.name[len(prefix):]: b for b in container.list_blobs(name_starts_with=prefix)}


def deliveries(container: Any, prefix: str, marker: str = "_SUCCESS") -> list[dict[str, Any]]:
    """The BlobCreated events the local host builds for each stored blob (as Azure would), data files first."""
    blobs = sorted(container.list_blobs(name_starts_with=prefix), key=lambda b: b.name.endswith(marker))
    return [blob_created_event(client, client.get_blob_properties())
            for client in (container.get_blob_client(b.name) for b in blobs)]


def test_a_directory_uploads_its_data_files_then_the_marker_and_the_batch_trains_once(
        world: World, tmp_path: Path) -> None:
    extra = tmp_path / "extra.csv"
    extra.write_bytes(ROWS)
    code, result = cli_json(world.deps, "upload", str(data_dir(tmp_path)), str(extra), "--dataset", "heart",
                            "--batch", "b1")
    assert code == 0, result
    assert result["uploaded"] == ["extra.csv", "part-0.csv", "part-1/rows.csv"] and result["unchanged"] == []
    assert sorted(result["ignored"]) == [".DS_Store: hidden or underscore file or folder, not data",
                                         "notes.txt: unreadable format for training; expected .csv, .csv.gz, .tsv, "
                                         ".tsv.gz, .parquet, .pq, .pqt"]
    assert result["marker_status"] == "written" and result["folder"] == f"{world.lake.name}/heart/b1/"
    blobs = stored(world.lake.container, "heart/b1/")
    assert set(blobs) == {"extra.csv", "part-0.csv", "part-1/rows.csv", "_SUCCESS"}
    assert world.lake.container.download_blob("heart/b1/part-1/rows.csv").readall() == ROWS + b"70,1\n"
    outcomes = [world.deliver(raw) for raw in deliveries(world.lake.container, "heart/b1/")]
    assert [o.status for o in outcomes] == ["acted"] * 4
    [request] = world.platform.job_requests.values()
    assert (request.data_name, request.data_version) == ("heart", "b1")
    record = world.deps.state.get(f"arrivals/{world.lake.name}/heart/b1")
    files = manifest.load(world.deps, ArrivalRecord.from_dict(record.value)).files if record is not None else {}
    assert sorted(files) == ["extra.csv", "part-0.csv", "part-1/rows.csv"]


def test_a_re_run_of_the_same_batch_uploads_nothing_and_says_so(world: World, tmp_path: Path) -> None:
    root = data_dir(tmp_path)
    assert cli(world.deps, "upload", str(root), "--dataset", "heart", "--batch", "b1")[0] == 0
    before = {n: b.etag for n, b in stored(world.lake.container, "heart/b1/").items()}
    code, text = cli(world.deps, "upload", str(root), "--dataset", "heart", "--batch", "b1")
    assert code == 0
    assert "2 file(s) already stored with the same content, not uploaded again" in text
    assert "_SUCCESS already there" in text and "uploaded part" not in text
    assert {n: b.etag for n, b in stored(world.lake.container, "heart/b1/").items()} == before
    # the batch is complete: a changed file would be a late file, never trained on; refused, nothing written
    (root / "part-0.csv").write_bytes(ROWS + b"33,0\n")
    code, result = cli_json(world.deps, "upload", str(root), "--dataset", "heart", "--batch", "b1")
    assert code == 2 and "already complete" in result["message"] and "part-0.csv" in result["message"]
    assert "new batch" in result["message"]
    assert {n: b.etag for n, b in stored(world.lake.container, "heart/b1/").items()} == before


def test_the_marker_is_written_only_after_every_file_and_a_re_run_finishes_the_batch(
        world: World, tmp_path: Path) -> None:
    root = data_dir(tmp_path)
    # another writer holds a lease on one blob of the batch: Azurite refuses our upload of it (412)
    held = world.lake.container.get_blob_client("heart/b1/part-1/rows.csv")
    held.upload_blob(b"old", overwrite=True)
    lease = held.acquire_lease(lease_duration=-1)
    code, result = cli_json(world.deps, "upload", str(root), "--dataset", "heart", "--batch", "b1")
    assert code == 1 and result["error"] == "upload-failed", result
    assert "marker was not written" in result["message"] and "--batch b1" in result["message"]
    assert result["uploaded"] == ["part-0.csv"] and "_SUCCESS" not in stored(world.lake.container, "heart/b1/")
    first = stored(world.lake.container, "heart/b1/")["part-0.csv"].etag
    lease.break_lease(lease_break_period=0)
    code, result = cli_json(world.deps, "upload", str(root), "--dataset", "heart", "--batch", "b1")
    assert code == 0, result
    assert result["uploaded"] == ["part-1/rows.csv"] and result["unchanged"] == ["part-0.csv"]
    blobs = stored(world.lake.container, "heart/b1/")
    assert blobs["part-0.csv"].etag == first and "_SUCCESS" in blobs
    assert world.lake.container.download_blob("heart/b1/part-1/rows.csv").readall() == ROWS + b"70,1\n"


def test_bad_input_is_named(world: World, tmp_path: Path) -> None:
    deps = world.deps
    code, result = cli_json(deps, "upload", str(tmp_path / "missing.csv"), "--dataset", "heart")
    assert code == 2 and result["message"].endswith("missing.csv: no such file or directory")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    code, result = cli_json(deps, "upload", str(tmp_path / "empty"), "--dataset", "heart")
    assert code == 2 and "holds no data file" in result["message"] and "readme.md" in result["message"]
    (tmp_path / "zero.csv").write_bytes(b"")
    code, result = cli_json(deps, "upload", str(tmp_path / "zero.csv"), "--dataset", "heart")
    assert code == 2 and "zero bytes" in result["message"]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_bytes(ROWS)
    (tmp_path / "x.csv").write_bytes(ROWS)
    code, result = cli_json(deps, "upload", str(tmp_path / "a" / "x.csv"), str(tmp_path / "x.csv"),
                            "--dataset", "heart")
    assert code == 2 and "would both be x.csv" in result["message"]
    code, result = cli_json(deps, "upload", str(tmp_path / "x.csv"), "--dataset", "my data")
    assert code == 2 and "dataset name 'my data'" in result["message"]
    assert list(world.lake.container.list_blobs()) == []


def test_without_a_marker_the_batch_completes_after_the_quiet_window(container_factory: Callable[[str], Any],
                                                                      clock: Clock, tmp_path: Path) -> None:
    world = make_world(container_factory, clock, REFLEX_COMPLETION_MARKER="", REFLEX_QUIET_SECONDS="60")
    (tmp_path / "x.csv").write_bytes(ROWS)
    code, text = cli(world.deps, "upload", str(tmp_path / "x.csv"), "--dataset", "heart", "--batch", "b1")
    assert code == 0 and "REFLEX_COMPLETION_MARKER is empty" in text and "60 s" in text
    assert list(stored(world.lake.container, "heart/b1/")) == ["x.csv"]


def test_scoring_data_goes_to_the_scoring_container_under_a_sortable_default_batch(
        container_factory: Callable[[str], Any], clock: Clock, tmp_path: Path) -> None:
    scoring = container_factory("scoring")
    world = make_world(container_factory, clock, REFLEX_SCORING_CONTAINER=scoring.container_name)
    (tmp_path / "x.csv").write_bytes(ROWS)
    code, first = cli_json(world.deps, "upload", str(tmp_path / "x.csv"), "--dataset", "heart", "--scoring")
    clock.advance(0.001)
    code2, second = cli_json(world.deps, "upload", str(tmp_path / "x.csv"), "--dataset", "heart", "--scoring")
    assert code == code2 == 0 and first["container"] == scoring.container_name
    assert first["batch"] == default_batch_id(clock.now - 0.001) and first["batch"] < second["batch"]
    assert set(stored(scoring, f"heart/{first['batch']}/")) == {"x.csv", "_SUCCESS"}
    assert list(world.lake.container.list_blobs()) == []


def test_a_large_file_reports_progress_per_block(world: World, tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("wb") as handle:
        handle.write(b"a,label\n")
        handle.write(b"1,0\n" * ((2 * BLOCK_BYTES + BLOCK_BYTES // 2) // 4))
    code, text = cli(world.deps, "upload", str(big), "--dataset", "heart", "--batch", "big")
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.startswith("  big.csv:")]
    assert len(lines) == 3 and lines[-1].endswith("(100%)"), text
    blob = stored(world.lake.container, "heart/big/")["big.csv"]
    assert blob.size == big.stat().st_size
    code, text = cli(world.deps, "upload", str(big), "--dataset", "heart", "--batch", "big")
    assert code == 0 and "already stored with the same content" in text  # MD5 kept for a block upload too


def test_the_real_entry_point_uploads_to_the_configured_account(container_factory: Callable[[str], Any],
                                                                tmp_path: Path) -> None:
    lake = container_factory("data")
    (tmp_path / "x.csv").write_bytes(ROWS)
    env = {**os.environ, "AzureWebJobsStorage": AZURITE, "REFLEX_DATA_CONTAINER": lake.container_name,
           "REFLEX_PLATFORM": "local", "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
           "REFLEX_STATE_CONTAINER": f"state-{uuid.uuid4().hex[:12]}"}
    done = subprocess.run([sys.executable, "-m", "reflex", "--json", "upload", str(tmp_path / "x.csv"),
                           "--dataset", "heart", "--batch", "b1"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["uploaded"] == ["x.csv"]
    assert set(stored(lake, "heart/b1/")) == {"x.csv", "_SUCCESS"}


def test_a_missing_container_is_named(container_factory: Callable[[str], Any], clock: Clock,
                                      tmp_path: Path) -> None:
    world = make_world(container_factory, clock, REFLEX_DATA_CONTAINER=f"absent-{uuid.uuid4().hex[:12]}")
    (tmp_path / "x.csv").write_bytes(ROWS)
    code, result = cli_json(world.deps, "upload", str(tmp_path / "x.csv"), "--dataset", "heart")
    assert code == 2 and "does not exist" in result["message"] and world.deps.settings.data_container in result[
        "message"]


def test_in_azure_the_account_url_from_the_settings_is_reached_with_the_signed_in_identity() -> None:
    """`AzureWebJobsStorage__blobServiceUri` (identity-based, as the app in Azure): DefaultAzureCredential, no key;
    uploads in blocks of BLOCK_BYTES so that progress is reported per block."""
    from azure.identity import DefaultAzureCredential

    from shared.adapters.storage import blob_service
    from tests.conftest import make_settings

    url = "https://reflexdata.blob.core.windows.net"
    settings = make_settings(AzureWebJobsStorage="", AzureWebJobsStorage__blobServiceUri=url)
    client = blob_service(settings, block_bytes=BLOCK_BYTES)
    assert client.url.rstrip("/") == url and isinstance(client.credential, DefaultAzureCredential)
    assert client.account_name == "reflexdata"
    assert blob_service(settings) is not client  # the app's own client keeps the SDK defaults
