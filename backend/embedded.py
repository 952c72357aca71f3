"""``spacetime up``: the whole system on one machine, no Docker needed.

A redis-server child (data in ``<data_dir>/redis``), a Dask LocalCluster whose
dashboard is on :8787, dispatcher processes and the API process. Ctrl-C or SIGTERM
stops all of it; a child that dies takes the rest down with it, loudly.
"""

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from distributed import LocalCluster
from redis import Redis

from backend.settings import Settings
from backend.waiting import wait_for

log = logging.getLogger(__name__)

CHILD_STOP_TIMEOUT_S = 10.0  # past a dispatcher's shutdown grace; see stop_children
START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Stop(Exception):
    """Raised in the main thread by the first SIGTERM or SIGINT, wherever start-up is."""


def _stop_on_signal(*_):
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
    raise Stop


def run_embedded(settings: Settings, redis_url: str | None, n_workers: int, n_dispatchers: int) -> int:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_on_signal)
    try:
        return _run(settings, redis_url, n_workers, n_dispatchers)
    except Stop:
        return 0


def _run(settings: Settings, redis_url: str | None, n_workers: int, n_dispatchers: int) -> int:
    """Start everything, then watch the children until one dies (1) or a signal (Stop)."""
    with ExitStack() as stack:
        if redis_url is None:
            redis_url = settings.redis_url
            stack.enter_context(redis_server(redis_url, settings.data_dir / "redis"))
        cluster = stack.enter_context(local_cluster(settings, n_workers))
        # The cluster may have moved to free ports; children and users get the real ones.
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DASK_SCHEDULER_ADDRESS": cluster.scheduler_address,
            "SPACETIME_DASHBOARD_URL": cluster.dashboard_link,
        }
        children = [spawn("dispatcher", env) for _ in range(n_dispatchers)] + [spawn("api", env)]
        stack.callback(stop_children, children, settings.shutdown_grace_s)
        api = f"http://{settings.api_host}:{settings.api_port}"
        wait_for(lambda: httpx.get(f"{api}/healthz").raise_for_status(), "the API", api, START_TIMEOUT_S)
        print(
            f"SpaceTime Analytics is up.\n  API        {api}\n  API docs   {api}/docs\n"
            f"  Dashboard  {cluster.dashboard_link}\n  Redis      {redis_url}\nCtrl-C stops everything.",
            flush=True,
        )
        while not (dead := [c for c in children if c.poll() is not None]):
            time.sleep(0.5)
        log.error("%s exited with %s; stopping", dead[0].args, dead[0].returncode)
        return 1


@contextmanager
def redis_server(url: str, data_dir: Path):
    """A redis-server child on ``url``'s host and port, AOF data in ``data_dir``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: `apt-get install redis-server`, or pass --redis-url")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if not port_is_free(host, port):  # never quietly use somebody else's Redis
        raise SystemExit(f"cannot start redis-server: {host}:{port} is already in use (pass --redis-url to use it)")
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            host,
            "--port",
            str(port),
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        wait_for(Redis.from_url(url).ping, "redis-server", url, 10)
        yield process
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def local_cluster(settings: Settings, n_workers: int):
    scheduler = urlsplit(settings.dask_scheduler_address)
    dashboard = urlsplit(settings.dashboard_url)
    with LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        host=scheduler.hostname,
        scheduler_port=scheduler.port,
        dashboard_address=f":{dashboard.port}",
        preload=["compute.preload"],
    ) as cluster:
        yield cluster


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def spawn(command: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backend.cli", command], env=env, preexec_fn=die_with_parent)


def die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when `spacetime up` dies, even by
    SIGKILL, so that no dispatcher, API or Redis outlives it. A no-op elsewhere."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_children(children: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM each child, then SIGKILL what is still running after the grace period."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + CHILD_STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
