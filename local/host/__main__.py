"""`python -m local.host`: run a v2 function app locally the way `func start` would.

    python -m local.host [--app function_app] [--app-dir .] [--port 7071] [--bind 127.0.0.1]
                         [--poll-seconds 2] [--no-timers] [--no-blob-poll] [--events-log PATH]
                         [--topic-key KEY] [--host-id ID] [--forward-to URL]
                         [--blob-subscription FUNCTION=CONTAINER ...]

Blob subscriptions (which Event Grid function gets the BlobCreated events of which container) are the app
module's `BLOB_SUBSCRIPTIONS`, or the `--blob-subscription` flags (a `%SETTING%` container is resolved).
Azurite raises no events, so the host polls those containers and delivers each new blob version as a
`Microsoft.Storage.BlobCreated` event through its Event Grid webhook (local/host/blobs.py).
With `--forward-to http://127.0.0.1:7071` it is a feeder for a Core Tools host (`func start`): it POSTs those
events to that host's `/runtime/webhooks/eventgrid`, serves the local topic `/api/events`, and runs no timers
(the other host does).

`local.settings.json` Values in the app folder are copied into the environment where unset, before the app
is imported (so `%SETTING%`s and the app's own settings see them). SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from local.host.index import build_index, load_app, load_local_settings
from local.host.runtime import Host
from shared.core import log


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local.host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="function_app", help="entry module of the function app")
    parser.add_argument("--app-dir", default=".", type=Path, help="app root (import root, local.settings.json)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (loopback by default)")
    parser.add_argument("--port", default=7071, type=int, help="HTTP port (0 = any free port)")
    parser.add_argument("--poll-seconds", default=2.0, type=float, help="blob subscription polling interval")
    parser.add_argument("--no-timers", action="store_true", help="do not run timer triggers on schedule")
    parser.add_argument("--no-blob-poll", action="store_true", help="do not poll storage for BlobCreated events")
    parser.add_argument("--blob-subscription", action="append", default=[], metavar="FUNCTION=CONTAINER",
                        help="deliver the container's BlobCreated events to FUNCTION (repeatable; default: the "
                             "app module's BLOB_SUBSCRIPTIONS)")
    parser.add_argument("--events-log", type=Path, help="append events published to /api/events here (JSONL)")
    parser.add_argument("--topic-key", help="require this aeg-sas-key on POST /api/events")
    parser.add_argument("--forward-to", metavar="URL", help="feed blob events to the Functions host at URL "
                                                             "instead of running the functions here")
    parser.add_argument("--host-id", help="host id in blob receipts (default: AzureFunctionsWebHost__hostid "
                                          "or the machine name)")
    return parser


def _subscriptions(flags: list[str], declared: object) -> dict[str, str]:
    if not flags:
        return dict(declared) if isinstance(declared, dict) else {}
    pairs = {}
    for flag in flags:
        function, sep, container = flag.partition("=")
        if not sep or not function or not container:
            raise SystemExit(f"--blob-subscription {flag!r}: expected FUNCTION=CONTAINER")
        pairs[function] = container
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.configure()
    copied = load_local_settings(args.app_dir)
    module, app = load_app(args.app, args.app_dir)
    index = build_index(app)
    subscriptions = _subscriptions(args.blob_subscription, getattr(module, "BLOB_SUBSCRIPTIONS", None))
    host = Host(index, bind=args.bind, port=args.port, host_id=args.host_id, poll_seconds=args.poll_seconds,
                timers=not args.no_timers, blob_poll=not args.no_blob_poll, events_log=args.events_log,
                topic_key=args.topic_key, forward_to=args.forward_to, blob_subscriptions=subscriptions)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    host.start()
    if copied:
        print(f"local.settings.json: set {', '.join(sorted(copied))}")
    print(f"Reflex local host {host.host_id} listening on {host.url}"
          + (f"; feeding blob events to {args.forward_to}" if args.forward_to else ""))
    watched = {sub.function: sub.container for sub in (host.poller.subscriptions if host.poller else ())}
    for name, entry in sorted(index.items()):
        detail = entry.settings.get("schedule") or (f"(BlobCreated of {watched[name]})" if name in watched else "")
        url = f"  POST {host.url}/runtime/webhooks/eventgrid?functionName={name}" \
            if entry.trigger_type == "eventGridTrigger" else ""
        print(f"  {name}: {entry.trigger_type} {detail}{url}".rstrip())
    sys.stdout.flush()
    stopped.wait()
    print("stopping...", flush=True)
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
