"""The ``spacetime`` command: run the parts of the system, or talk to a running one.

spacetime up            everything on this machine (Redis, Dask, dispatchers, API)
spacetime api           the HTTP API (uvicorn)
spacetime dispatcher    one dispatcher process
spacetime submit ...    submit a job to a running API and wait for its result
spacetime openapi       print the OpenAPI document as YAML
"""

import argparse
import logging
import signal
import sys
import threading

import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spacetime", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the whole system on this machine")
    up.add_argument("--redis-url", help="use this Redis instead of starting one")
    up.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    up.add_argument("--dispatchers", type=int, default=2, help="dispatcher processes (default 2)")
    up.set_defaults(run=_up)

    commands.add_parser("api", help="run the HTTP API").set_defaults(run=_api)
    commands.add_parser("dispatcher", help="run one dispatcher").set_defaults(run=_dispatcher)
    commands.add_parser("openapi", help="print the OpenAPI document (YAML)").set_defaults(run=_openapi)

    submit = commands.add_parser("submit", help="submit a job and wait for its result")
    submit.add_argument("kind", choices=["randomize", "even-sum"])
    submit.add_argument("input", help="a file to upload, or (even-sum) an s3:// or file:// URL")
    submit.add_argument("-o", "--output", help="randomize: where to write the PNG (default out.png)")
    submit.add_argument("--api", default=None, help="API base URL (default from settings)")
    submit.add_argument("--client-id", default="anonymous", help="sent as X-Client-Id")
    submit.set_defaults(run=_submit)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    return args.run(args) or 0


def _up(args) -> int:
    from backend.embedded import run_embedded
    from backend.settings import get_settings

    return run_embedded(get_settings(), args.redis_url, args.workers, args.dispatchers)


def _api(args) -> int:
    import uvicorn

    from backend.api import create_app
    from backend.settings import get_settings

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")
    return 0


def _dispatcher(args) -> int:
    from backend.dispatcher import run_dispatcher
    from backend.settings import get_settings

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return run_dispatcher(get_settings(), stop)


def _openapi(args) -> int:
    from backend.api import create_app

    sys.stdout.write(openapi_yaml(create_app()))
    return 0


def openapi_yaml(app) -> str:
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True)


def _submit(args) -> int:
    import httpx

    from backend.client import submit_and_wait
    from backend.settings import get_settings

    settings = get_settings()
    api = args.api or f"http://{settings.api_host}:{settings.api_port}"
    try:
        return submit_and_wait(api, args.kind, args.input, args.output, args.client_id)
    except (OSError, httpx.HTTPError) as exc:  # a missing file, an API that is not there
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
