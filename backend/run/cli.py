"""The ``spacetime`` command: run the parts of the system, or talk to a running one.

spacetime up            everything on this machine (Redis, Dask, dispatchers, API)
spacetime api           the HTTP API (uvicorn)
spacetime dispatcher    one dispatcher process
spacetime submit ...    submit a job to a running API and wait for its result
spacetime jobs ...      your jobs on a running API: list, cancel, watch
spacetime openapi       print the OpenAPI document as YAML
spacetime doctor        check every counter of the queues (--repair: fix the drift)
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time

import yaml

from backend.core.kinds import KINDS
from backend.core.redact import redact_logs

# Where `spacetime submit` (and the notebooks) take the API key from, in keys mode.
API_KEY_VARIABLE = "SPACETIME_API_KEY"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    redact_logs()
    return args.run(args) or 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; deployments' container commands are checked against it
    (tests/test_deploy_files.py)."""
    parser = argparse.ArgumentParser(prog="spacetime", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the whole system on this machine")
    up.add_argument("--redis-url", help="use this Redis instead of starting one")
    up.add_argument(
        "--workers", type=int, default=2, help="Dask worker processes in each pool, bulk and interactive (default 2)"
    )
    up.add_argument("--dispatchers", type=int, default=2, help="dispatcher processes in each lane (default 2)")
    up.set_defaults(run=_up)

    commands.add_parser("api", help="run the HTTP API").set_defaults(run=_api)
    commands.add_parser("dispatcher", help="run one dispatcher").set_defaults(run=_dispatcher)
    commands.add_parser("openapi", help="print the OpenAPI document (YAML)").set_defaults(run=_openapi)
    doctor = commands.add_parser("doctor", help="recompute every counter and ring of the queues; report drift")
    doctor.add_argument("--repair", action="store_true", help="write the recomputed values where they differ")
    doctor.set_defaults(run=_doctor)

    submit = commands.add_parser("submit", help="submit a job and wait for its result")
    submit.add_argument("kind", choices=list(KINDS))
    by_url = ", ".join(name for name, kind in KINDS.items() if kind.in_blocks)
    submit.add_argument("input", help=f"a file to upload, or ({by_url}) an s3:// or file:// URL")
    submit.add_argument("-o", "--output", help="where to write a result that is not JSON (default out.<type>)")
    submit.add_argument(
        "--timeout", type=float, help="give up waiting for the job after this many seconds (default: no limit)"
    )
    submit.add_argument(
        "--keep-input", action="store_true", help="keep an uploaded file after the job (deleted by default)"
    )
    submit.set_defaults(run=_submit)

    jobs = commands.add_parser("jobs", help="your jobs on a running API: list, cancel, watch").add_subparsers(
        dest="action", required=True
    )
    listing = jobs.add_parser("list", help="your jobs, newest first")
    listing.add_argument("--status", choices=["requested", "received", "finished", "errored"])
    listing.add_argument("--kind", choices=list(KINDS))
    listing.add_argument("--since", type=float, help="only jobs submitted at or after this time (epoch s)")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    listing.set_defaults(run=_jobs_list)
    cancel = jobs.add_parser("cancel", help="cancel a job: it ends errored, its work stops")
    cancel.add_argument("token")
    cancel.set_defaults(run=_jobs_cancel)
    watch = jobs.add_parser("watch", help="a job's progress, live, until it ends")
    watch.add_argument("token")
    watch.set_defaults(run=_jobs_watch)
    for command in (submit, listing, cancel, watch):
        command.add_argument("--api", default=None, help="API base URL (default from settings)")
        command.add_argument("--client-id", default="anonymous", help="sent as X-Client-Id (open mode)")

    clients = commands.add_parser("clients", help="register clients: API keys, weights, quotas").add_subparsers(
        dest="action", required=True
    )
    add = clients.add_parser("add", help="register a client and print its new API key (once)")
    add.add_argument("name")
    add.add_argument("--weight", type=int, help="its share of the cluster against others (default 1)")
    add.add_argument("--max-running-bulk", type=int, help="bulk jobs it may have running at once")
    add.add_argument("--rate", type=float, help="job submissions a second (0: no limit)")
    add.add_argument("--max-backlog-bytes", type=int, help="input bytes of its jobs queued or running (0: no limit)")
    add.add_argument(
        "--admin", action="store_true", help="an operator: may read every client's state (GET /overview, keys mode)"
    )
    add.add_argument(
        "--key-sha256",
        help="register the SHA-256 (64 hex digits) of a key made elsewhere, and print no key (for logged consoles)",
    )
    add.set_defaults(run=_clients_add)
    clients.add_parser("list", help="list registered clients and their settings").set_defaults(run=_clients_list)
    remove = clients.add_parser("remove", help="unregister a client; its key stops working")
    remove.add_argument("name")
    remove.set_defaults(run=_clients_remove)
    return parser


def _up(args) -> int:
    from backend.core.settings import get_settings
    from backend.run.up import run_embedded

    return run_embedded(get_settings(), args.redis_url, args.workers, args.dispatchers)


def _api(args) -> int:
    import uvicorn

    from backend.api.app import create_app
    from backend.core.settings import get_settings

    settings = get_settings()
    config = uvicorn.Config(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")
    redact_logs("uvicorn", "uvicorn.access")  # uvicorn's own handlers, set up by its Config
    uvicorn.Server(config).run()
    return 0


def _dispatcher(args) -> int:
    from backend.core.settings import get_settings
    from backend.dispatch.dispatcher import run_dispatcher, stopping_bound_s

    settings = get_settings()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    bound = threading.Thread(target=_exit_past, args=(stop, stopping_bound_s(settings)), name="stop-bound", daemon=True)
    bound.start()
    return run_dispatcher(settings, stop)


def _exit_past(stop: threading.Event, bound_s: float) -> None:
    """End the process ``bound_s`` after ``stop`` is set, if it has not ended by then: a
    stop that waits on a dead scheduler (or a start-up wait, which does not look at
    ``stop``) would outlive `spacetime up` or a container's stop timeout. What the
    dispatcher still holds goes back to its queues once its lease lapses."""
    stop.wait()
    time.sleep(bound_s)
    logging.getLogger("backend.dispatch.dispatcher").error("not stopped %.0f s after the signal: exiting now", bound_s)
    os._exit(1)


def _openapi(args) -> int:
    from backend.api.app import create_app

    sys.stdout.write(openapi_yaml(create_app()))
    return 0


def openapi_yaml(app) -> str:
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True)


def _doctor(args) -> int:
    """Exit 0 when nothing drifted (or all was repaired), 1 when drift is left."""
    from backend.core.settings import get_settings
    from backend.jobs.connection import connect
    from backend.jobs.doctor import Doctor

    drifts = Doctor(connect(get_settings().redis_url, socket_timeout=30)).check(repair=args.repair)
    for drift in drifts:
        print(f"{'repaired' if args.repair else 'drift'}: {drift}")
    if not drifts:
        print("every counter and ring is at its recomputed value")
    return 1 if drifts and not args.repair else 0


def _api_url(args) -> str:
    from backend.core.settings import get_settings

    settings = get_settings()
    return args.api or f"http://{settings.api_host}:{settings.api_port}"


def _submit(args) -> int:
    from backend.run.http_client import submit_and_wait

    return _talking(
        lambda: submit_and_wait(
            _api_url(args),
            args.kind,
            args.input,
            args.output,
            args.client_id,
            os.environ.get(API_KEY_VARIABLE),
            args.timeout,
            args.keep_input,
        )
    )


def _jobs_list(args) -> int:
    from itertools import islice

    def run() -> int:
        with _client(args) as st:
            jobs = st.jobs(args.status, args.kind, args.since, page=min(args.limit, 100))
            for job in islice(jobs, args.limit):
                print(describe_job(job))
        return 0

    return _talking(run)


def _jobs_cancel(args) -> int:
    def run() -> int:
        with _client(args) as st:
            print(describe_job(st.cancel(args.token)))
        return 0

    return _talking(run)


def _jobs_watch(args) -> int:
    from tqdm import tqdm

    from backend.run.http_client import show_progress

    def run() -> int:
        with _client(args) as st, tqdm(desc=args.token[:8], unit="block") as bar:
            status = st.watch(args.token, on_progress=lambda done, total: show_progress(bar, done, total))
        print(status.get("status"), status.get("error", ""))
        return 0 if status.get("status") == "finished" else 1

    return _talking(run)


def describe_job(job: dict) -> str:
    """One line of ``spacetime jobs``: token, status, kind, submit time, then what is known."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(job.get("requested_at") or 0, UTC).strftime("%Y-%m-%d %H:%M:%S")
    line = f"{job['token']}  {job['status']:<9}  {job['kind']:<10}  {when}"
    if progress := job.get("progress"):
        line += f"  {progress['done']}/{progress['total']} blocks"
    if job.get("queue_position") is not None:
        line += f"  {job['queue_position']} ahead in the queue"
    if job.get("error"):
        line += f"  {job['error']}"
    return line


def _client(args):
    from backend.run.http_client import SpaceTime

    return SpaceTime(_api_url(args), os.environ.get(API_KEY_VARIABLE), args.client_id)


def _talking(run) -> int:
    """Run a command that talks to the API; its refusals and failures as one line and 1."""
    import httpx

    from backend.run.http_client import ApiError

    try:
        return int(run())
    except ApiError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (OSError, httpx.HTTPError) as exc:  # a missing file, an API that is not there
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _registry():
    from backend.core.settings import get_settings
    from backend.jobs.clients import ClientRegistry
    from backend.jobs.connection import connect

    settings = get_settings()
    return ClientRegistry(connect(settings.redis_url, socket_timeout=10), settings)


def _clients_add(args) -> int:
    from compute.errors import InvalidInput

    quotas = {
        "weight": args.weight,
        "max_running_bulk": args.max_running_bulk,
        "rate": args.rate,
        "max_backlog_bytes": args.max_backlog_bytes,
        "admin": args.admin,
    }
    try:
        if args.key_sha256 is not None:
            _registry().add_hashed(args.name, args.key_sha256, **quotas)
            print(f"client {args.name} registered with the key hash given; no key is shown", file=sys.stderr)
            return 0
        key = _registry().add(args.name, **quotas)
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"client {args.name} registered. Its API key, shown only now:", file=sys.stderr)
    print(key)
    return 0


def _clients_list(args) -> int:
    from backend.jobs.clients import describe

    registry = _registry()
    for name in registry.names():
        settings = describe(registry.get(name))
        fields = " ".join(f"{k}={v}" for k, v in settings.items() if k != "name")
        print(f"{name}  {fields}  key={registry.fingerprint(name)}...")
    return 0


def _clients_remove(args) -> int:
    if not _registry().remove(args.name):
        print(f"error: no client named {args.name!r}", file=sys.stderr)
        return 1
    print(f"client {args.name} removed; its key no longer works", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
