"""A batch trains on exactly what it recorded (#18.4): the frozen copy, on real Azurite with the real flows.

Before: the data asset was the live batch folder, so a file overwritten or added after completion (recorded as
late, "not trained on") reached the job, and `explain` named blobs that were not what trained. Now the manifest's
versions are copied server-side (Copy Blob with `x-ms-source-if-match`, shared/batches/freeze.py) into
`.reflex-frozen/…`, and the data asset, the AutoML MLTable and scoring inputs point there. These tests fail on the
code before it: the asset path was the live folder, and there was no `freezing` or `trained` to look at.

Budgets: a pass copies at least one round (PARALLEL * 4 files) and stops once its time budget is spent; the
tests set the budget to 0 s, so each pass is exactly one round whatever the machine's speed.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local.blobs import datastores, download_folder, resolve
from reflex.cli import main
from shared.batches import freeze, manifest
from shared.batches.paths import PathProblem, file_problem, parse_blob_path
from shared.batches.record import ArrivalRecord
from shared.core.deps import Deps
from shared.core.errors import TransientError
from tests.conftest import Clock
from tests.real_chain import MODEL, World, make_world
from tests.timers_support import make_champion

ORIGINAL = {"part-0.csv": b"a,label\n1,0\n2,1\n", "part-1.csv": b"a,label\n3,0\n4,1\n"}


@pytest.fixture
def world(container_factory: Callable[[str], Any], clock: Clock) -> World:
    return make_world(container_factory, clock)


def cli_json(deps: Deps, *argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(["--json", *argv], deps=deps, stdout=out)
    return code, json.loads(out.getvalue())


def cli_text(deps: Deps, *argv: str) -> str:
    out = io.StringIO()
    main(list(argv), deps=deps, stdout=out)
    return out.getvalue()


def arrival(world: World, batch: str) -> dict[str, Any]:
    record = world.deps.state.get(f"arrivals/{world.lake.name}/{batch}")
    assert record is not None
    return record.value


def recorded_files(world: World, batch: str) -> dict[str, Any]:
    """The batch's frozen manifest's files (shared/batches/manifest.py `load`): what freezing copies."""
    return dict(manifest.load(world.deps, ArrivalRecord.from_dict(arrival(world, batch))).files)


def test_a_late_file_and_an_overwrite_after_completion_do_not_reach_the_training_data(world: World,
                                                                                      tmp_path: Path) -> None:
    raws = [world.lake.put(f"heart/b1/{name}", body) for name, body in ORIGINAL.items()]
    raws.append(world.lake.put("heart/b1/_SUCCESS", b""))
    outcomes = [world.deliver(raw) for raw in raws]
    assert outcomes[-1].status == "acted" and outcomes[-1].reason.startswith("submitted ")
    recorded = {f: e["etag"] for f, e in recorded_files(world, "heart/b1").items()}
    # after completion: part-0 overwritten, part-9 added; both recorded as late, not trained on
    overwrite = world.lake.put("heart/b1/part-0.csv", b"a,label\n999,1\n")
    late = world.lake.put("heart/b1/part-9.csv", b"a,label\n777,0\n")
    assert [world.deliver(r).status for r in (overwrite, late)] == ["skipped", "skipped"]
    assert overwrite["data"]["eTag"].strip('"') != recorded["part-0.csv"]

    # what the job reads: the data asset's path resolved as the local job runner resolves it (local/platform.py
    # `submit_training` -> spec input, local/jobrunner.py `run_job` -> `download_folder`), as Azure ML reads it
    [asset] = world.platform.data.values()
    assert "/paths/.reflex-frozen/heart/b1/" in asset.path
    container, prefix = resolve(asset.path, datastores(world.deps.settings))
    written = download_folder(world.deps.blobs, container, prefix, tmp_path)
    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in written} == ORIGINAL

    # explain names exactly the blobs that trained: the frozen copies, with the recorded source versions
    job = str(outcomes[-1].details["job"])
    completed = world.finish(job, 0.9)
    assert world.run("registration.run_event", completed, completed["id"]).status == "acted"
    code, explained = cli_json(world.deps, "explain", job)
    assert code == 0
    base = world.lake.container.url
    folder = prefix
    assert explained["trained"] == [
        {"batch": f"{world.lake.name}/heart/b1", "file": name, "frozen": f"{base}/{folder}{name}",
         "source": f"{base}/heart/b1/{name}", "source_etag": recorded[name]} for name in sorted(ORIGINAL)]
    for blob in explained["trained"]:  # each copy holds the recorded bytes and says which version it is
        copy = world.lake.container.get_blob_client(f"{folder}{blob['file']}")
        assert copy.download_blob().readall() == ORIGINAL[blob["file"]]
        assert copy.get_blob_properties().metadata[freeze.SOURCE_ETAG] == blob["source_etag"]
    text = cli_text(world.deps, "explain", job)
    assert "read by the jobs" in text and recorded["part-0.csv"] in text
    assert overwrite["data"]["eTag"].strip('"') not in text and "part-9.csv" not in text.split("history")[0]


def test_freezing_is_bounded_per_invocation_and_resumed_by_the_sweep_without_duplicate_work(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freeze, "BUDGET_SECONDS", 0.0)
    monkeypatch.setattr(freeze, "PARALLEL", 2)  # a pass is one round of 8 copies
    copies: list[str] = []
    real_copy = freeze._copy
    crash = {"at": -1}
    lock = threading.Lock()

    def counting_copy(container: Any, folder: str, file: str, entry: Any) -> tuple[str, str]:
        with lock:
            if 0 <= crash["at"] <= len(copies):
                crash["at"] = -1
                raise TransientError("storage answered 503 (injected: the worker dies mid-freeze)")
            copies.append(file)
        return real_copy(container, folder, file, entry)

    monkeypatch.setattr(freeze, "_copy", counting_copy)
    names = [f"part-{i:02d}.csv" for i in range(30)]
    raws = world.lake.put_many([f"heart/b1/{n}" for n in names])
    for raw in raws:
        world.deliver(raw)
    marker = world.lake.put("heart/b1/_SUCCESS", b"")
    first = world.deliver(marker)
    assert first.status == "acted" and first.reason.startswith("freezing: 8 of 30 file(s) copied")
    assert arrival(world, "heart/b1")["status"] == "freezing" and not world.platform.jobs
    code, status = cli_json(world.deps, "status")
    assert code == 0
    [pending] = [p for p in status["pending_batches"] if p["key"].endswith("/heart/b1")]
    assert pending["waiting_for"].startswith("freezing: 8 of 30 file(s) copied into .reflex-frozen/heart/b1/")
    # a redelivery of the marker is one more bounded pass, never a second copy of a file
    assert world.deliver(marker).reason.startswith("freezing: 16 of 30")
    crash["at"] = len(copies) + 3  # the next pass dies after three copies
    swept = world.run("data.sweep", {"past_due": False}, "")
    assert swept.details["failed"] == 1 and arrival(world, "heart/b1")["status"] == "freezing"
    for _ in range(5):
        world.run("data.sweep", {"past_due": False}, "")
    record = arrival(world, "heart/b1")
    assert record["status"] == "submitted"
    assert sorted(copies) == names  # every file copied exactly once, the crash and the redelivery included
    assert world.platform.calls["submit_training"] == 1 and world.platform.calls["register_data"] == 1
    assert [h[1] for h in record["history"]].count("freezing") >= 3
    for _ in range(2):  # later sweeps and redeliveries copy nothing more and submit nothing more
        world.run("data.sweep", {"past_due": False}, "")
        world.deliver(marker)
    assert sorted(copies) == names and world.platform.calls["submit_training"] == 1


def test_a_source_changed_before_its_copy_fails_the_batch_naming_the_file(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freeze, "BUDGET_SECONDS", 0.0)
    monkeypatch.setattr(freeze, "PARALLEL", 2)
    raws = world.lake.put_many([f"heart/b1/part-{i:02d}.csv" for i in range(12)])
    for raw in [*raws, world.lake.put("heart/b1/_SUCCESS", b"")]:
        world.deliver(raw)
    assert arrival(world, "heart/b1")["status"] == "freezing"  # 8 of 12 frozen
    recorded = recorded_files(world, "heart/b1")["part-11.csv"]["etag"]
    changed = world.lake.put("heart/b1/part-11.csv", b"a,label\n5,5\n")  # before its copy: that version is gone
    assert world.deliver(changed).status == "skipped"
    swept = world.run("data.sweep", {"past_due": False}, "")
    assert swept.status == "skipped"
    record = arrival(world, "heart/b1")
    assert record["status"] == "failed" and not world.platform.jobs
    reason = record["reason"]
    assert "part-11.csv: changed since it was recorded" in reason and recorded in reason
    assert reason.endswith("upload the data as a new batch folder")
    [failed] = [e for e in world.deps.publisher.sent if e.type == "Reflex.TrainingFailed"]
    assert failed.data["stage"] == "freeze" and set(failed.data["lost"]) == {"part-11.csv"}
    code, status = cli_json(world.deps, "status")
    assert code == 0
    [shown] = [f for f in status["failures"] if f["kind"] == "training"]
    assert shown["reason"] == reason
    # the ledger line of the pass that found it says so too
    ledger = world.deps.ledger
    assert ledger is not None
    line = next(e for e in ledger.entries() if e["reaction"] == "data.sweep")
    assert "part-11.csv" in json.dumps(line)
    # and nothing trains on another version later: a new sweep leaves it failed
    world.run("data.sweep", {"past_due": False}, "")
    assert arrival(world, "heart/b1")["status"] == "failed" and not world.platform.jobs


def test_a_scoring_batch_scores_its_frozen_copy(container_factory: Callable[[str], Any], clock: Clock,
                                               tmp_path: Path) -> None:
    scoring = container_factory("scoring")
    world = make_world(container_factory, clock, REFLEX_SCORING_CONTAINER=scoring.container_name)
    make_champion(world.platform, model=MODEL)
    from tests.timers_support import upload

    for name, body in ORIGINAL.items():
        assert world.run("scoring.blob", upload(scoring, f"heart/s1/{name}", body), "").status == "acted"
    world.run("scoring.blob", upload(scoring, "heart/s1/_SUCCESS", b""), "")
    world.run("scoring.blob", upload(scoring, "heart/s1/part-0.csv", b"a,label\n999,1\n"), "")  # late overwrite
    for _ in range(4):
        clock.advance(60)
        world.run("scoring.track", {}, "")
    record = world.deps.state.get(f"scoring/{scoring.container_name}/heart/s1")
    assert record is not None
    assert record.value["status"] == "submitted", record.value
    assert "/paths/.reflex-frozen/heart/s1/" in record.value["input"]
    container, prefix = resolve(record.value["input"], datastores(world.deps.settings))
    written = download_folder(world.deps.blobs, container, prefix, tmp_path)
    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in written} == ORIGINAL


def test_the_frozen_folder_is_never_taken_for_a_batch_and_names_leave_room_for_it() -> None:
    with pytest.raises(PathProblem, match="frozen copy"):
        parse_blob_path("reflex-data", ".reflex-frozen/heart/b1/0123456789abcdef/part-0.csv")
    # the frozen copy's name adds `.reflex-frozen/` and the digest folder (32 characters) to `heart/b1/<file>`
    room = 1024 - len(".reflex-frozen/heart/b1/0123456789abcdef/")
    fits = ("x" * 199 + "/") * 4 + "y" * (room - 800 - 4) + ".csv"
    assert len(fits) == room and file_problem(fits, 10, folder="heart/b1/") == ""
    problem = file_problem("z" + fits, 10, folder="heart/b1/")
    assert "once copied for training" in problem and "at most 1024" in problem


def test_the_drift_baseline_reads_the_frozen_copies_the_champion_trained_on(world: World) -> None:
    from shared.monitoring.drift_check import training_files

    chain = world.chain("heart/b1", upto="registered")
    world.lake.put("heart/b1/part-0.csv", b"a,label\n999,1\n")  # overwritten after training
    name, _, version = chain.model.partition(":")
    model = world.platform.get_model(name, version)
    assert model is not None
    files = training_files(world.deps, model)
    assert [n.rsplit("/", 1)[-1] for _, n in files] == ["part-0.csv", "part-1.csv"]
    assert all(c == world.lake.name and n.startswith(".reflex-frozen/heart/b1/") for c, n in files)
    assert all(world.lake.container.download_blob(n).readall() == b"a,label\n1,0\n" for _, n in files)


def test_a_pass_starts_the_copies_left_from_a_count_and_lists_the_folder_only_once_all_are_started(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """#17: a pass costs what is left to copy, not the batch's size. Listing a frozen folder of 10,000 copies took
    19.6 s on Azurite (more than a pass's budget), so a pass that listed first copied one round: ~150 passes."""
    monkeypatch.setattr(freeze, "BUDGET_SECONDS", 0.0)
    monkeypatch.setattr(freeze, "PARALLEL", 2)  # a pass is one round of 8 copies
    listings: list[str] = []
    real_existing = freeze._existing

    def counting_existing(container: Any, folder: str) -> dict[str, Any]:
        listings.append(folder)
        return real_existing(container, folder)

    monkeypatch.setattr(freeze, "_existing", counting_existing)
    for raw in world.lake.put_many([f"heart/b1/part-{i:02d}.csv" for i in range(30)]):
        world.deliver(raw)
    assert world.deliver(world.lake.put("heart/b1/_SUCCESS", b"")).reason.startswith("freezing: 8 of 30")
    for _ in range(2):
        world.run("data.sweep", {"past_due": False}, "")
    assert arrival(world, "heart/b1")["reason"].startswith("freezing: 24 of 30") and listings == []
    world.run("data.sweep", {"past_due": False}, "")  # the last 6 copies, then the one listing that checks them all
    record = arrival(world, "heart/b1")
    assert record["status"] == "submitted" and len(listings) == 1 and len(world.platform.jobs) == 1
    started = world.deps.state.get(f"{record['manifest']['key']}.started")
    assert started is not None and started.value == {"started": 30, "also": []}


def test_a_copy_error_is_reported_even_when_the_count_of_started_copies_cannot_be_stored(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy's own error is what the batch reports; the count that could not be stored as well only means the
    next pass starts those copies again (conditional copies: "exists", checked). Storing it used to run in a
    `finally`, so its error replaced the copy's."""
    monkeypatch.setattr(freeze, "BUDGET_SECONDS", 0.0)
    monkeypatch.setattr(freeze, "PARALLEL", 2)
    real_rounds = freeze._rounds

    def rounds_then_copy_fails(*args: Any) -> dict[str, str]:
        real_rounds(*args)
        raise TransientError("copy blob: 503 ServerBusy")

    def count_fails(*_: Any) -> None:
        raise RuntimeError("state store down")

    for raw in world.lake.put_many([f"heart/b1/part-{i:02d}.csv" for i in range(12)]):
        world.deliver(raw)
    monkeypatch.setattr(freeze, "_rounds", rounds_then_copy_fails)
    monkeypatch.setattr(freeze, "_note_started", count_fails)
    with pytest.raises(TransientError, match="503 ServerBusy"):  # the trigger redelivers on a transient error
        world.deliver(world.lake.put("heart/b1/_SUCCESS", b""))
    monkeypatch.setattr(freeze, "_rounds", real_rounds)
    monkeypatch.undo()  # storage is back: the sweep resumes and the batch trains once
    for _ in range(3):
        world.run("data.sweep", {"past_due": False}, "")
    assert arrival(world, "heart/b1")["status"] == "submitted" and len(world.platform.jobs) == 1
