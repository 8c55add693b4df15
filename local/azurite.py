"""Start the repo's pinned Azurite on loopback when none is listening, run a command, stop what was started.

Used by `make test` (and the local stack) so a fresh machine needs nothing but `npm ci`:
`python -m local.azurite run -- <command …>` exits with the command's exit code.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["azurite_binary", "free_port", "is_listening", "private_blob", "start", "stop", "wait_ready"]

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"blob": 10000, "queue": 10001, "table": 10002}


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def azurite_binary() -> Path:
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise SystemExit(f"Azurite is not installed at {binary}: run `npm ci` in {ROOT} (make does it for you)")
    return binary


def start(location: str | None = None, log_path: str | None = None, timeout: float = 30.0) -> subprocess.Popen:
    """Start Azurite (blob, queue, table) on 127.0.0.1 and wait until every port answers."""
    location = location or tempfile.mkdtemp(prefix="azurite-")
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [str(azurite_binary()), "--silent", "--location", location, "--blobHost", "127.0.0.1",
         "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1", "--skipApiVersionCheck", "--loose"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(proc, lambda: all(is_listening(p) for p in PORTS.values()),
               f"Azurite (ports {sorted(PORTS.values())})", log_path or "not kept", timeout)
    return proc


def wait_ready(proc: subprocess.Popen, ready: Callable[[], bool], what: str, log: object,
               timeout: float) -> None:
    """Wait until `ready()`; a process that exits or stays unready past `timeout` fails naming `what` and `log`."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit(f"{what} did not become ready within {timeout:.0f}s; see {log}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
"""Azurite's well-known development account key (Azurite README, "Default Storage Account")."""


@contextmanager
def private_blob(timeout: float = 30.0) -> Iterator[str]:
    """A blob-only Azurite of its own, in memory, on a free loopback port, for as long as the block runs: its
    connection string. Stopped (and its memory gone) on the way out, also when the block raises.

    Why benches use one: Azurite keeps every blob of every container of the instance in one LokiJS collection and
    looks a blob up by a scan of it (`LokiBlobMetadataStore.createBlob` -> `Collection.findOne` on
    accountName/containerName/name: at 14,000 blobs it was 52% of Azurite's CPU in a profile of Put Blob), so
    on a shared instance one bench pays for every blob another left there. Azure Storage has no such cost."""
    port = free_port()
    proc = subprocess.Popen(
        [str(ROOT / "node_modules" / ".bin" / "azurite-blob"), "--silent", "--inMemoryPersistence",
         "--blobHost", "127.0.0.1", "--blobPort", str(port), "--skipApiVersionCheck", "--loose"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(proc, lambda: is_listening(port), f"Azurite (blob, port {port})", "not kept", timeout)
        yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    finally:
        stop(proc)


def _run(command: list[str]) -> int:
    started = None
    location = None
    if not is_listening(PORTS["blob"]):
        location = tempfile.mkdtemp(prefix="azurite-test-")
        started = start(location)
        print(f"azurite: started on 127.0.0.1:{PORTS['blob']} (data in {location})", flush=True)
    else:
        print(f"azurite: using the one already listening on 127.0.0.1:{PORTS['blob']}", flush=True)
    try:
        return subprocess.call(command, env=os.environ.copy())
    finally:
        if started is not None:
            stop(started)
            shutil.rmtree(location or "", ignore_errors=True)
            print("azurite: stopped", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "run" or "--" not in args:
        raise SystemExit("usage: python -m local.azurite run -- <command …>")
    sys.exit(_run(args[args.index("--") + 1:]))
