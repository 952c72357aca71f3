"""``spacetime up``: the whole system on one machine, no Docker needed.

A redis-server child (AOF data in ``<data_dir>/redis``), a Dask LocalCluster (the
scheduler in this process, worker processes under their nannies), dispatcher processes
and the API process, all listening on 127.0.0.1 unless the settings say otherwise.
backend.run.supervisor restarts a child that crashes, and stops everything when one keeps
crashing. Ctrl-C, SIGTERM or SIGHUP stop all of it, start-up included, within the
shutdown grace plus ``supervisor.STOP_MARGIN_S``.
"""

import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from distributed import Nanny, Scheduler, SpecCluster
from distributed.worker_memory import parse_memory_limit
from redis import Redis

from backend.core.redact import redact
from backend.core.settings import Settings
from backend.core.waiting import wait_for
from backend.run.supervisor import GaveUp, Supervisor, launch
from compute.defaults import BULK_RESOURCE, INTERACTIVE_RESOURCE

log = logging.getLogger(__name__)

REDIS_START_TIMEOUT_S = 10.0
API_START_TIMEOUT_S = 60.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stop(BaseException):
    """Raised in the main thread by the first stop signal, wherever `up` is.

    A BaseException, as KeyboardInterrupt is, so that no ``except Exception`` on the way
    (the retry loop of a start-up wait) can swallow it and leave `up` running.
    """


def _stop_on_signal(*_):
    _ignore_stop_signals()  # a second Ctrl-C must not interrupt the clean-up
    raise Stop


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def run_embedded(settings: Settings, redis_url: str | None, n_workers: int, n_dispatchers: int) -> int:
    """Run until a stop signal (0), or until start-up fails or a child crash-loops (1)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_on_signal)
    supervisor = Supervisor(settings, redis_url or settings.redis_url)
    try:
        with ExitStack() as stack:
            stack.callback(supervisor.close)
            try:
                _run(supervisor, stack, settings, redis_url, n_workers, n_dispatchers)
            finally:
                _ignore_stop_signals()  # whatever ended the run, the clean-up runs to its end
    except Stop:
        return 0
    except (GaveUp, TimeoutError) as exc:
        log.error("%s; stopped everything", exc)
        return 1
    raise AssertionError("unreachable: _run returns only by an exception")


def _run(
    supervisor: Supervisor,
    stack: ExitStack,
    settings: Settings,
    redis_url: str | None,
    n_workers: int,
    n_dispatchers: int,
) -> None:
    """Start everything in order, then supervise; it ends only by an exception.

    Clean-up runs in reverse: the API and the dispatchers stop while the cluster and
    Redis still serve them, then the cluster closes, then redis-server stops.
    """
    if redis_url is None:
        redis_url = settings.redis_url
        stack.callback(supervisor.stop, "redis-server")
        supervisor.start("redis-server", redis_argv(redis_url, settings.data_dir / "redis"))
        probe = stack.enter_context(Redis.from_url(redis_url))
        wait_for(probe.ping, "redis-server", redis_url, REDIS_START_TIMEOUT_S)
    cluster = stack.enter_context(local_cluster(settings, n_workers, supervisor.seconds_left))
    # The cluster may have moved to free ports; children and users get the real ones.
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DASK_SCHEDULER_ADDRESS": cluster.scheduler_address,
        "SPACETIME_DASHBOARD_URL": cluster.dashboard_link,
    }
    stack.callback(supervisor.stop, "api", "dispatcher")
    # A dispatcher per lane, each one a process of its own: the bulk lane's busy Dask client
    # and loops never hold the interpreter lock that an image job's loop waits for.
    for _ in range(n_dispatchers):
        for only in ({"SPACETIME_BULK_CONCURRENCY": "0"}, {"SPACETIME_INTERACTIVE_CONCURRENCY": "0"}):
            supervisor.start("dispatcher", spacetime_command("dispatcher"), env | only)
    supervisor.start("api", spacetime_command("api"), env)

    api = f"http://{settings.api_host}:{settings.api_port}"
    try:
        supervisor.watch(until=lambda: answers(f"{api}/healthz"), timeout_s=API_START_TIMEOUT_S)
    except TimeoutError:
        raise TimeoutError(f"the API at {api} did not answer within {API_START_TIMEOUT_S:.0f} s") from None
    print(
        f"SpaceTime Analytics is up.\n  API        {api}\n  Console    {api}/ui\n  API docs   {api}/docs\n"
        f"  Dashboard  {cluster.dashboard_link}\n  Redis      {redact(redis_url)}\nCtrl-C stops everything.",
        flush=True,
    )
    supervisor.watch()


def redis_argv(url: str, data_dir: Path) -> list[str]:
    """The command of a redis-server on ``url``'s host and port, AOF data in ``data_dir``.

    Restarted with the same command, it binds the same port and reloads the same AOF.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: `apt-get install redis-server`, or pass --redis-url")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if not port_is_free(host, port):  # never quietly use somebody else's Redis
        raise SystemExit(f"cannot start redis-server: {host}:{port} is already in use (pass --redis-url to use it)")
    data_dir.mkdir(parents=True, exist_ok=True)
    # fmt: off
    return [
        binary,
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir.resolve()),
        # AOF, written before each reply and fsynced every second (docs/reliability.md):
        # a crash of the process loses nothing acknowledged, a power cut at most ~1 s.
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        # An AOF rewrite writes its base as RDB: without LZF, for the large values are
        # PNGs, compressed already. With it, 300 MiB of them took 2.4-2.5 s of a core to
        # write at the same size; without, 0.7-1.0 s (a client's flood of images set off a
        # rewrite every few seconds, beside everyone's jobs).
        "--rdbcompression", "no",
        "--logfile", str((data_dir / "redis-server.log").resolve()),
    ]
    # fmt: on


@contextmanager
def redis_server(url: str, data_dir: Path):
    """A redis-server child for as long as the block runs (the test suite's Redis)."""
    process = launch(redis_argv(url, data_dir))
    try:
        with Redis.from_url(url) as probe:
            wait_for(probe.ping, "redis-server", url, REDIS_START_TIMEOUT_S)
        yield process
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def local_cluster(settings: Settings, n_workers: int, close_timeout_s: Callable[[], float]) -> Iterator[SpecCluster]:
    """The scheduler in this process; ``n_workers`` bulk and as many interactive worker
    processes under nannies, one thread each (a pool per kind of work, each sized to the
    cores: idle workers cost nothing, and either pool alone can use every core).

    Two pools, so that clients do not slow each other: block tasks need the ``bulk``
    resource and image tasks the ``interactive`` one (backend.dispatch.runners), and bulk workers
    run at a lower CPU priority (compute.preload). An image then never waits behind a
    block for a thread, nor for a core while blocks keep every core busy.

    The scheduler and the workers listen on the scheduler's host, the dashboard on its
    URL's host (127.0.0.1 for both by default): a bare ``:port`` would listen on every
    interface.
    """
    scheduler = urlsplit(settings.dask_scheduler_address)
    dashboard = urlsplit(settings.dashboard_url)
    host = scheduler.hostname or "127.0.0.1"
    worker = {
        "nthreads": 1,
        "host": host,
        "dashboard": False,
        "preload": ["compute.preload"],
        "memory_limit": parse_memory_limit("auto", 1, 2 * n_workers, logger=log),
        "silence_logs": logging.WARNING,
    }
    workers = {
        f"bulk-{i}": {"cls": Nanny, "options": {**worker, "resources": {BULK_RESOURCE: 1}}} for i in range(n_workers)
    }
    workers |= {
        f"interactive-{i}": {"cls": Nanny, "options": {**worker, "resources": {INTERACTIVE_RESOURCE: 1}}}
        for i in range(n_workers)
    }
    cluster = SpecCluster(
        scheduler={
            "cls": Scheduler,
            "options": {
                "host": host,
                "port": scheduler.port or 0,
                "dashboard_address": f"{dashboard.hostname}:{dashboard.port}",
            },
        },
        workers=workers,
    )
    try:
        yield cluster
    finally:
        cluster.close(timeout=max(1.0, close_timeout_s()))


def answers(url: str) -> bool:
    """Whether ``url`` answers 2xx right now."""
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


def spacetime_command(command: str) -> list[str]:
    """The argv of a ``spacetime <command>`` child, run by this same interpreter."""
    return [sys.executable, "-m", "backend.run.cli", command]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
