"""Real servers for tests, on loopback: free ports, a live API (uvicorn), a redis-server of a
test's own, the API as a process, a whole system in a thread."""

import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from distributed import Client
from redis import Redis, RedisError

from backend.api.app import create_app
from backend.core.settings import Settings
from backend.dispatch.dispatcher import Dispatcher
from tests.waiting import wait_until

# Below Linux's ephemeral range (32768-60999), where the kernel picks the local ports of
# outgoing connections: a port handed out by bind(0) and closed again can be taken by
# one of those before the server the test starts binds it.
PORTS = range(20000, 32000)


def _shuffled_ports() -> Iterator[int]:
    """Every port of PORTS once, in a random order, then again: a port handed out is not
    handed out again for the next 12,000 calls, so two servers a test starts before either
    binds cannot be given the same one (a birthday collision, one CI run in a few hundred)."""
    rng = random.Random()  # its own state: Hypothesis watches the global one
    while True:
        ports = list(PORTS)
        rng.shuffle(ports)
        yield from ports


_ports = _shuffled_ports()


def free_port() -> int:
    """A loopback port nobody listens on right now and no other caller was given recently."""
    while True:
        port = next(_ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@contextmanager
def live_api(settings: Settings) -> Iterator[str]:
    """A live uvicorn serving the API on a free loopback port; yields its base URL."""
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


class RedisProcess:
    """A redis-server with AOF (as `spacetime up` runs it) that can be killed or stopped, and
    restarted; a replica of the one on port ``replica_of`` when that is set (at its next start)."""

    def __init__(self, data_dir: Path, password: str = "", replica_of: int | None = None):
        self.port = free_port()
        self.url = f"redis://:{password}@127.0.0.1:{self.port}/0" if password else f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir
        self.password = password
        self.replica_of = replica_of
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        argv += ["--requirepass", self.password] if self.password else []
        # A replica that connects is sent its copy at once (Redis waits 5 s for more by default).
        argv += ["--repl-diskless-sync-delay", "0"]
        argv += ["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        wait_until(lambda: _pings(self.url), timeout_s=10, what="redis-server")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF out and exits (what an operator's restart does)."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.2).ping())
    except RedisError:
        return False


@contextmanager
def own_redis(data_dir: Path, password: str = "", replica_of: int | None = None) -> Iterator[RedisProcess]:
    server = RedisProcess(data_dir, password, replica_of)
    server.start()
    try:
        yield server
    finally:
        if server.process and server.process.poll() is None:
            server.process.terminate()
            server.process.wait(10)


@contextmanager
def api_process(redis_url: str, data_dir, first: str = "", port: int | None = None, **env: str):
    """`spacetime api` in a process of its own (on ``port``, or a free one) with more
    ``env``; yields (process, base URL).

    ``first`` is Python run in that process before the API starts (e.g. a resource limit).
    """
    port = port or free_port()
    environment = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SPACETIME_API_PORT": str(port),
        "SPACETIME_DATA_DIR": str(data_dir),
        **env,
    }
    start = (
        "import runpy, sys; sys.argv = ['spacetime', 'api']; runpy.run_module('backend.run.cli', run_name='__main__')"
    )
    code = f"{first}\n{start}"
    process = subprocess.Popen([sys.executable, "-c", code], env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), what="the API")
        yield process, url
    finally:
        process.terminate()
        process.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code in (200, 503)
    except httpx.TransportError:
        return False


@contextmanager
def live_system(settings: Settings, client: Client) -> Iterator[str]:
    """A dispatcher on ``client``'s cluster behind a live API; yields the API's base URL."""
    dispatcher = Dispatcher(settings, client)
    dispatcher.start()
    try:
        with live_api(settings) as url:
            yield url
    finally:
        dispatcher.stop()
