"""The ``spacetime`` command: run the parts of the system, or talk to a running one.

spacetime up            everything on this machine (Redis, Dask, dispatchers, API)
spacetime api           the HTTP API (uvicorn)
spacetime dispatcher    one dispatcher process
spacetime submit ...    submit a job to a running API and wait for its result
spacetime openapi       print the OpenAPI document as YAML
spacetime doctor        check every counter of the queues (--repair: fix the drift)
"""

import argparse
import logging
import os
import signal
import sys
import threading

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
    submit.add_argument("input", help="a file to upload, or (even-sum) an s3:// or file:// URL")
    submit.add_argument("-o", "--output", help="where to write a result that is not JSON (default out.<type>)")
    submit.add_argument("--api", default=None, help="API base URL (default from settings)")
    submit.add_argument("--client-id", default="anonymous", help="sent as X-Client-Id (open mode)")
    submit.add_argument(
        "--timeout", type=float, help="give up waiting for the job after this many seconds (default: no limit)"
    )
    submit.add_argument(
        "--keep-input", action="store_true", help="keep an uploaded file after the job (deleted by default)"
    )
    submit.set_defaults(run=_submit)

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
    from backend.dispatch.dispatcher import run_dispatcher

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return run_dispatcher(get_settings(), stop)


def _openapi(args) -> int:
    from backend.api.app import create_app

    sys.stdout.write(openapi_yaml(create_app()))
    return 0


def openapi_yaml(app) -> str:
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True)


def _doctor(args) -> int:
    """Exit 0 when nothing drifted (or all was repaired), 1 when drift is left."""
    from redis import Redis

    from backend.core.settings import get_settings
    from backend.jobs.doctor import Doctor

    drifts = Doctor(Redis.from_url(get_settings().redis_url, socket_timeout=30)).check(repair=args.repair)
    for drift in drifts:
        print(f"{'repaired' if args.repair else 'drift'}: {drift}")
    if not drifts:
        print("every counter and ring is at its recomputed value")
    return 1 if drifts and not args.repair else 0


def _submit(args) -> int:
    import httpx

    from backend.core.settings import get_settings
    from backend.run.http_client import submit_and_wait

    settings = get_settings()
    api = args.api or f"http://{settings.api_host}:{settings.api_port}"
    try:
        return submit_and_wait(
            api,
            args.kind,
            args.input,
            args.output,
            args.client_id,
            os.environ.get(API_KEY_VARIABLE),
            args.timeout,
            args.keep_input,
        )
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
