"""Freezing a batch (#18.4) against the service's own Copy Blob and List Blobs answers, through the real client.

Azurite answers a changed source with ConditionNotMet and completes every copy at once, so what Azure answers
(SourceConditionNotMet, TargetConditionNotMet, CannotVerifyCopySource with the source's status, 403, 5xx, a copy
that is `pending` and later `success`, `failed` or `aborted`) was never exercised. Here azure-storage-blob sends its
real requests and `responses` (azure-core's default transport is requests) replays tests/fixtures/storage/ at the
HTTP boundary, exactly as recorded or documented (README there). Everything else, the batch's own blobs and the
state container, stays on Azurite (passthrough), so the arrival flow, `start_batch` and the sweep run for real.

Clients here retry no answer (conftest's `blob_service`: `retry_status=0`, only a dropped connection is tried
again): one request per answer, so a 503 surfaces at once; in Azure the SDK's own retry policy retries 5xx
first (azure-storage-blob `ExponentialRetry`), and only then does the pass end with `TransientError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import pytest
import responses
from responses import matchers

from shared.batches import freeze, manifest
from shared.batches.record import ArrivalRecord
from shared.core.errors import PermanentError, TransientError
from tests.conftest import Clock
from tests.real_chain import World, make_world

FIXTURES = Path(__file__).parent / "fixtures" / "storage"
COPY = json.loads((FIXTURES / "copy_blob.json").read_text(encoding="utf-8"))["answers"]
LISTING = json.loads((FIXTURES / "list_blobs_copy.json").read_text(encoding="utf-8"))
FAILED = LISTING["failed_description"]["value"]  # 412 ConditionNotMet "Copy failed when reading the source."
FAULT = LISTING["service_fault_description"]["value"]  # 500 InternalError "The server encountered an internal error…"
ETAG = "0x8DA0686A126FE7D"  # the source ETag of the Go SDK's Copy Blob recording
FOLDER = ".reflex-frozen/heart/b1/0123456789abcdef/"
ROLES = ("Storage Blob Data Reader on container reflex-data (to read the recorded version) and Storage Blob Data "
         "Contributor there, limited to .reflex-frozen/")


def _answer(name: str) -> dict[str, Any]:
    """`responses` keywords replaying a fixture answer (its Content-Length is the body's, set by `responses`)."""
    found = COPY[name]
    headers = {k: v for k, v in found["headers"].items() if k.lower() != "content-length"}
    return {"status": found["status"], "headers": headers, "body": found["body"].encode("utf-8")}


def _is_copy(request: Any) -> bool:
    return request.method == "PUT" and "x-ms-copy-source" in request.headers


def listing(container: str, entries: Sequence[tuple[str, str, str, str]]) -> dict[str, Any]:
    """A List Blobs answer of the frozen folder: the recorded one (list_blobs_copy.json), its copied entry
    repeated per (blob name, source ETag in metadata, CopyStatus, CopyStatusDescription)."""
    recorded: str = LISTING["body"]
    start = recorded.index("<Blob><Name>blob1copy</Name>")
    entry = recorded[start:recorded.index("</Blob>", start) + len("</Blob>")]
    blobs = []
    for name, etag, status, description in entries:
        assert status in LISTING["copy_statuses"]["values"]
        blob = entry.replace("<Name>blob1copy</Name>", f"<Name>{escape(name)}</Name>")
        blob = blob.replace("<CopyStatus>success</CopyStatus>", f"<CopyStatus>{status}</CopyStatus>")
        if status == "pending":  # a copy in progress has no completion time yet (List Blobs)
            blob = re.sub(r"<CopyCompletionTime>[^<]*</CopyCompletionTime>", "", blob)
        if description:
            blob = blob.replace("</CopyProgress>",
                                f"</CopyProgress><CopyStatusDescription>{escape(description)}</CopyStatusDescription>")
        meta = freeze.SOURCE_ETAG
        blobs.append(blob.replace("<OrMetadata />", f"<Metadata><{meta}>{etag}</{meta}></Metadata><OrMetadata />"))
    head = recorded[:recorded.index("<Blobs>") + len("<Blobs>")].replace(
        'ContainerName="containerbbc42e06"', f'ContainerName="{container}"')
    return {"status": LISTING["status"], "headers": LISTING["headers"],
            "body": (head + "".join(blobs) + recorded[recorded.index("</Blobs>"):]).encode("utf-8")}


@pytest.fixture
def data(blob_service: Any) -> Any:
    """A container client of the data container (never created: every request is answered by a fixture)."""
    return blob_service.get_container_client("reflex-data")


@contextmanager
def service(passthru: str = "") -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        if passthru:
            rsps.add_passthru(passthru)
        yield rsps


def replay_copy(rsps: responses.RequestsMock, container: Any, name: str, blob: str = "") -> None:
    """Copy Blob requests into the frozen folder (only those: PUT with x-ms-copy-source) answer `name`."""
    url = re.compile(re.escape(container.url) + r"/\.reflex-frozen/" + (re.escape(blob) if blob else ".*") + "$")
    rsps.add(responses.PUT, url, match=[matchers.header_matcher({"x-ms-copy-source": re.compile(".+")})],
             **_answer(name))


def replay_listing(rsps: responses.RequestsMock, container: Any,
                   entries: Sequence[tuple[str, str, str, str]]) -> None:
    """List Blobs of the frozen folder (prefix .reflex-frozen/...) answers `entries`."""
    url = re.compile(re.escape(container.url) + r"\?(?=.*comp=list)(?=.*prefix=\.reflex-frozen).*")
    rsps.add(responses.GET, url, **listing(container.container_name, entries))


# --- the answers one by one, through `_copy` -------------------------------------------------------------

OUTCOMES = {  # fixture answer -> (state, why) of `_copy`
    "source_condition_not_met": ("lost", f"changed since it was recorded (etag {ETAG}; Copy Blob answered 412 "
                                         "SourceConditionNotMet)"),
    "cannot_verify_copy_source_412": ("lost", f"changed since it was recorded (etag {ETAG}; Copy Blob answered 412 "
                                              "CannotVerifyCopySource)"),
    "source_blob_not_found": ("lost", f"deleted since it was recorded (etag {ETAG}; Copy Blob answered 404 "
                                      "BlobNotFound)"),
    "cannot_verify_copy_source_404": ("lost", f"deleted since it was recorded (etag {ETAG}; Copy Blob answered 404 "
                                              "CannotVerifyCopySource)"),
    "blob_already_exists": ("exists", ""),
    "target_condition_not_met": ("exists", ""),  # If-None-Match: * met an earlier copy: checked, never "lost"
    "copy_success": ("frozen", ""),
    "copy_pending": ("pending", ""),
}


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_each_copy_blob_answer_ends_as_the_service_means_it(data: Any, name: str) -> None:
    entry = {"url": f"{data.url}/heart/b1/part-0.csv", "etag": ETAG}
    with service() as rsps:
        replay_copy(rsps, data, name)
        assert freeze._copy(data, FOLDER, "part-0.csv", entry) == OUTCOMES[name]
        assert [_is_copy(c.request) for c in rsps.calls] == [True]


@pytest.mark.parametrize("name", ["server_busy", "internal_error", "cannot_verify_copy_source_500"])
def test_a_5xx_is_transient_never_a_lost_version(data: Any, name: str) -> None:
    entry = {"url": f"{data.url}/heart/b1/part-0.csv", "etag": ETAG}
    with service() as rsps, pytest.raises(TransientError) as raised:
        replay_copy(rsps, data, name)
        freeze._copy(data, FOLDER, "part-0.csv", entry)
    assert f"answered {COPY[name]['status']}" in str(raised.value)


@pytest.mark.parametrize("name", ["authorization_permission_mismatch", "cannot_verify_copy_source_401"])
def test_a_missing_role_is_permanent_and_names_the_roles_the_identity_needs(data: Any, name: str) -> None:
    entry = {"url": f"{data.url}/heart/b1/part-0.csv", "etag": ETAG}
    with service() as rsps, pytest.raises(PermanentError) as raised:
        replay_copy(rsps, data, name)
        freeze._copy(data, FOLDER, "part-0.csv", entry)
    message = str(raised.value)
    assert f"copying {entry['url']} to reflex-data/{FOLDER}part-0.csv" in message
    assert ROLES in message and "infra/app/rbac.bicep" in message
    assert COPY[name]["headers"]["x-ms-error-code"] in message  # the service's code, as the SDK reports it


def test_the_copy_request_carries_exactly_the_headers_copy_blob_documents(data: Any) -> None:
    """Copy Blob (learn.microsoft.com/rest/api/storageservices/copy-blob): x-ms-copy-source, the source condition
    x-ms-source-if-match, the destination condition If-None-Match and x-ms-meta-<name>; nothing else conditional."""
    entry = {"url": f"{data.url}/heart/b1/part-0.csv", "etag": ETAG}
    with service() as rsps:
        replay_copy(rsps, data, "copy_success")
        freeze._copy(data, FOLDER, "part-0.csv", entry)
        [call] = rsps.calls
    request = call.request
    assert request.method == "PUT" and request.url == f"{data.url}/{FOLDER}part-0.csv"
    sent = {k.lower(): v for k, v in request.headers.items()}
    copy_headers = {k: v for k, v in sent.items()
                    if k.startswith(("if-", "x-ms-source-", "x-ms-copy-", "x-ms-meta-", "x-ms-lease-", "x-ms-tags"))}
    assert copy_headers == {"x-ms-copy-source": entry["url"], "x-ms-source-if-match": ETAG, "if-none-match": "*",
                            f"x-ms-meta-{freeze.SOURCE_ETAG}": ETAG}
    assert "x-ms-version" in sent and "authorization" in sent


def test_a_listing_of_the_frozen_folder_reads_each_copy_status_as_the_service_writes_it(data: Any) -> None:
    rows = [(f"{FOLDER}a.csv", ETAG, "pending", ""), (f"{FOLDER}b.csv", ETAG, "success", ""),
            (f"{FOLDER}c.csv", ETAG, "failed", FAILED), (f"{FOLDER}d.csv", ETAG, "aborted", ""),
            (f"{FOLDER}e.csv", ETAG, "failed", FAULT)]
    with service() as rsps:
        replay_listing(rsps, data, rows)
        found = freeze._existing(data, FOLDER)
        [call] = rsps.calls
    assert parse_qs(urlsplit(str(call.request.url)).query)["include"] == ["metadata,copy"]
    assert {name: freeze._check(blob, ETAG) for name, blob in found.items()} == {
        "a.csv": ("pending", ""), "b.csv": ("frozen", ""),
        "c.csv": ("lost", f"its copy failed ({FAILED}): the source changed or vanished while it was copied"),
        "d.csv": ("lost", "its copy aborted (aborted): the source changed or vanished while it was copied"),
        "e.csv": ("retry", f"its copy failed ({FAULT})")}  # the service's own fault: the source may be intact


def test_a_failed_copy_is_discarded_only_if_it_is_still_that_very_blob(container_factory: Callable[[str], Any]) -> None:
    """The delete before copying again is conditional on the failed copy's ETag (If-Match), on Azurite."""
    container = container_factory("data")
    blob = container.upload_blob(f"{FOLDER}a.csv", b"partial")
    stale = type("Listed", (), {"name": f"{FOLDER}a.csv", "etag": '"0x8DA0000000000000"'})()
    freeze._discard(container, stale)  # replaced since it was listed: left alone
    assert blob.exists()
    current = type("Listed", (), {"name": f"{FOLDER}a.csv", "etag": blob.get_blob_properties().etag})()
    freeze._discard(container, current)
    assert not blob.exists()
    freeze._discard(container, current)  # gone meanwhile: nothing to do


# --- whole passes: the arrival flow, start_batch and the sweep on Azurite, Copy Blob answered by fixtures -------

@pytest.fixture
def world(container_factory: Callable[[str], Any], clock: Clock, blob_service: Any) -> World:
    """The chain on Azurite, its storage calls made with one attempt each (see the module docstring)."""
    made = make_world(container_factory, clock)
    made.deps = replace(made.deps, blob_factory=lambda: blob_service)
    return made


def azurite(world: World) -> str:
    parts = urlsplit(world.lake.container.url)
    return f"{parts.scheme}://{parts.netloc}"


def arrival(world: World) -> ArrivalRecord:
    record = world.deps.state.get(f"arrivals/{world.lake.name}/heart/b1")
    assert record is not None
    return ArrivalRecord.from_dict(record.value)


def complete(world: World, copy_answer: str) -> tuple[Any, list[str]]:
    """Upload heart/b1 (two files) and its marker; the marker's delivery freezes with every Copy Blob answered
    `copy_answer` (the rest on Azurite). Returns (its outcome or the error it raised, the Copy Blob URLs sent)."""
    for name in ("part-0.csv", "part-1.csv"):
        assert world.deliver(world.lake.put(f"heart/b1/{name}")).status == "acted"
    marker = world.lake.put("heart/b1/_SUCCESS", b"")
    with service(azurite(world)) as rsps:
        replay_copy(rsps, world.lake.container, copy_answer)
        if copy_answer == "copy_pending":  # once every copy is started the pass lists the folder: the service
            lists_pending(rsps, world)       # lists the copies it accepted, pending (List Blobs include=copy)
        try:
            outcome: Any = world.deliver(marker)
        except TransientError as exc:
            outcome = exc
        return outcome, copies(rsps)


def lists_pending(rsps: responses.RequestsMock, world: World) -> None:
    """The frozen folder's listing answers every manifest file as a pending copy of its recorded version (built
    when asked: the folder is named by the manifest the completing delivery freezes)."""
    container = world.lake.container

    def answer(request: Any) -> tuple[int, dict[str, str], bytes]:
        record = arrival(world)
        folder = freeze.frozen_folder(record)
        files = manifest.load(world.deps, record).files
        found = listing(container.container_name,
                        [(folder + f, str(e["etag"]), "pending", "") for f, e in sorted(files.items())])
        return found["status"], found["headers"], found["body"]

    url = re.compile(re.escape(container.url) + r"\?(?=.*comp=list)(?=.*prefix=\.reflex-frozen).*")
    rsps.add_callback(responses.GET, url, callback=answer)


def sweep(world: World, entries: Sequence[tuple[str, str, str]] | None = None, copy_answer: str = "") -> list[str]:
    """One sweep; the frozen folder's listing answers `entries` (file, CopyStatus, description) with the recorded
    ETags in their metadata, Copy Blob answers `copy_answer` (when given). Returns the Copy Blob URLs sent."""
    record = arrival(world)
    folder = freeze.frozen_folder(record)
    etags = {f: str(e["etag"]) for f, e in manifest.load(world.deps, record).files.items()}
    with service(azurite(world)) as rsps:
        if entries is not None:
            replay_listing(rsps, world.lake.container,
                           [(folder + f, etags[f], status, why) for f, status, why in entries])
        if copy_answer:
            replay_copy(rsps, world.lake.container, copy_answer)
        world.run("data.sweep", {"past_due": False}, "")
        return copies(rsps)


def copies(rsps: responses.RequestsMock) -> list[str]:
    return [str(c.request.url) for c in rsps.calls if _is_copy(c.request)]


def test_a_pending_copy_keeps_the_batch_freezing_until_a_later_pass_lists_it_done(world: World) -> None:
    outcome, first = complete(world, "copy_pending")
    assert outcome.status == "acted" and outcome.details["freezing"] is True
    folder = freeze.frozen_folder(arrival(world))
    assert outcome.reason == (f"freezing: 0 of 2 file(s) copied into {folder}, 2 copy(ies) still pending; the next "
                              "pass (sweep or tracker) continues")
    assert len(first) == 2 and arrival(world).status == "freezing" and not world.platform.jobs

    still = sweep(world, [("part-0.csv", "pending", ""), ("part-1.csv", "success", "")])
    assert still == []  # a pending copy is waited for, never started again
    record = arrival(world)
    assert record.status == "freezing" and record.reason.startswith("freezing: 1 of 2 file(s) copied")
    assert not world.platform.jobs

    done = sweep(world, [("part-0.csv", "success", ""), ("part-1.csv", "success", "")])
    assert done == []
    record = arrival(world)
    assert record.status == "submitted" and world.platform.calls["submit_training"] == 1
    assert record.data is not None and record.data.path == freeze.frozen_path(world.deps.settings.data_datastore,
                                                                              record)
    sweep(world, [("part-0.csv", "success", ""), ("part-1.csv", "success", "")])  # later passes do nothing more
    assert world.platform.calls["submit_training"] == 1


@pytest.mark.parametrize(("status", "description"), [("failed", FAILED), ("aborted", "")])
def test_a_copy_that_failed_or_was_aborted_fails_the_batch_with_the_services_description(
        world: World, status: str, description: str) -> None:
    complete(world, "copy_pending")
    sweep(world, [("part-0.csv", "success", ""), ("part-1.csv", status, description)])
    record = arrival(world)
    assert record.status == "failed" and not world.platform.jobs
    assert f"part-1.csv: its copy {status} ({description or status})" in record.reason
    assert record.reason.endswith("upload the data as a new batch folder")
    [failed] = [e for e in world.deps.publisher.sent if e.type == "Reflex.TrainingFailed"]
    assert failed.data["stage"] == "freeze" and set(failed.data["lost"]) == {"part-1.csv"}


def test_a_copy_the_service_failed_on_its_own_is_made_again_by_the_next_pass(world: World) -> None:
    complete(world, "copy_pending")
    sweep(world, [("part-0.csv", "success", ""), ("part-1.csv", "failed", FAULT)])  # part-1 copied again (Azurite)
    record = arrival(world)
    assert record.status == "submitted" and world.platform.calls["submit_training"] == 1
    [copy] = world.lake.container.list_blobs(name_starts_with=freeze.frozen_folder(record), include=["metadata"])
    assert copy.name.endswith("/part-1.csv")
    assert copy.metadata[freeze.SOURCE_ETAG] == manifest.load(world.deps, record).files["part-1.csv"]["etag"]


def test_a_source_changed_before_its_copy_fails_the_batch_naming_the_file_and_its_etag(world: World) -> None:
    outcome, _ = complete(world, "source_condition_not_met")
    assert outcome.status == "skipped"
    record = arrival(world)
    etag = str(manifest.load(world.deps, record).files["part-0.csv"]["etag"])
    assert record.status == "failed" and not world.platform.jobs
    assert (f"part-0.csv: changed since it was recorded (etag {etag}; Copy Blob answered 412 SourceConditionNotMet)"
            in record.reason)


def test_server_busy_leaves_the_batch_freezing_and_the_next_pass_copies_it(world: World) -> None:
    outcome, first = complete(world, "server_busy")
    assert isinstance(outcome, TransientError) and "service answered 503" in str(outcome)
    assert first and arrival(world).status == "freezing"  # handed back, not lost
    sweep(world)  # storage answers again (Azurite): both copies made, the job submitted
    record = arrival(world)
    assert record.status == "submitted" and world.platform.calls["submit_training"] == 1
    folder = freeze.frozen_folder(record)
    made = {b.name[len(folder):]: b.metadata[freeze.SOURCE_ETAG]
            for b in world.lake.container.list_blobs(name_starts_with=folder, include=["metadata"])}
    assert made == {f: e["etag"] for f, e in manifest.load(world.deps, record).files.items()}


def test_a_missing_role_fails_the_batch_with_the_roles_to_assign_and_a_new_attempt_goes_on(world: World) -> None:
    from shared.arrival.retry import train_again

    complete(world, "authorization_permission_mismatch")
    record = arrival(world)
    assert record.status == "failed" and not world.platform.jobs
    assert record.reason.startswith("freezing stopped: copying ")
    assert f"Storage Blob Data Reader on container {world.lake.name}" in record.reason
    assert "AuthorizationPermissionMismatch" in record.reason
    assert record.reason.endswith(f"fix that, then train it again: python -m reflex train {record.batch_id}")
    # the role assigned: the operator's new attempt freezes (on Azurite now) and submits
    again = train_again(world.deps, f"arrivals/{world.lake.name}/heart/b1", by="op", why="role assigned")
    assert again.status == "acted", again.reason
    assert arrival(world).status == "submitted" and world.platform.calls["submit_training"] == 1


@pytest.mark.parametrize("answer", ["target_condition_not_met", "blob_already_exists"])
def test_a_copy_made_by_a_concurrent_pass_is_found_by_if_none_match_and_checked(world: World, answer: str) -> None:
    """Another pass copied the files between this pass's listing (empty) and its Copy Blob: the service answers the
    destination condition (If-None-Match: *), and the copy in place (on Azurite, with its metadata) is checked."""
    complete(world, "copy_pending")  # nothing copied yet on Azurite
    record = arrival(world)
    folder = freeze.frozen_folder(record)
    for name, entry in manifest.load(world.deps, record).files.items():  # the concurrent pass, for real
        assert freeze._copy(world.lake.container, folder, name, entry) == ("frozen", "")
    assert len(sweep(world, [], copy_answer=answer)) == 2
    assert arrival(world).status == "submitted" and world.platform.calls["submit_training"] == 1
