"""Helpers shared by the tests: ports, waits, a live API, a redis-server of a test's own, image tiles."""

import io
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

import cloudpickle
import httpx
import numpy as np
import uvicorn
from distributed import Client, Scheduler
from distributed.diagnostics.plugin import SchedulerPlugin
from PIL import Image
from redis import Redis, RedisError

from backend.api.app import create_app
from backend.core.settings import Settings
from backend.dispatch.dispatcher import Dispatcher

FINAL = ("finished", "errored")
FIXTURES = Path(__file__).parent / "fixtures"


# Below Linux's ephemeral range (32768-60999), where the kernel picks the local ports of
# outgoing connections: a port handed out by bind(0) and closed again can be taken by
# one of those before the server the test starts binds it.
PORTS = range(20000, 32000)
_rng = random.Random()  # its own state: Hypothesis watches the global one


def free_port() -> int:
    """A loopback port nobody listens on right now, chosen at random outside the ephemeral range."""
    while True:
        port = _rng.choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def wait_status(
    api_url: str, kind: str, token: str, timeout_s: float = 30.0, headers: dict | None = None
) -> list[dict]:
    """Poll until the job ends; return every distinct status body seen, in order."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = httpx.get(f"{api_url}/{kind}/{token}/status", headers=headers).json()
        if not seen or seen[-1] != body:
            seen.append(body)
        if body["status"] in FINAL:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"job {token} did not end in {timeout_s}s; saw {seen}")


def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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
    """A redis-server with AOF (as `spacetime up` runs it) that can be killed or stopped, and restarted."""

    def __init__(self, data_dir: Path, password: str = ""):
        self.port = free_port()
        self.url = f"redis://:{password}@127.0.0.1:{self.port}/0" if password else f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir
        self.password = password
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        argv += ["--requirepass", self.password] if self.password else []
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
def own_redis(data_dir: Path, password: str = "") -> Iterator[RedisProcess]:
    server = RedisProcess(data_dir, password)
    server.start()
    try:
        yield server
    finally:
        if server.process and server.process.poll() is None:
            server.process.terminate()
            server.process.wait(10)


def tiles(pixels: np.ndarray, block: int) -> list[bytes]:
    """The image's full ``block`` x ``block`` tiles, sorted: equal for an image and any shuffle of it."""
    rows, cols = pixels.shape[0] // block, pixels.shape[1] // block
    return sorted(
        pixels[r * block : (r + 1) * block, c * block : (c + 1) * block].tobytes()
        for r in range(rows)
        for c in range(cols)
    )


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


# A test image's size: 4 x 3 full 60-pixel tiles, plus 10-pixel strips on both edges.
IMAGE_SIZE = (250, 190)


def make_image(mode: str, rng: np.random.Generator) -> Image.Image:
    w, h = IMAGE_SIZE
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    if mode == "P":
        rgb = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=200)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8) * 255).convert("1")
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 255, (h, w, channels), dtype=np.uint8).squeeze(), mode)


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


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


class SchedulerTasks(SchedulerPlugin):
    """What a scheduler in this process held for the tasks whose keys start with ``prefix``:
    each task's spec as the client sent it (function and arguments, serialized) and the
    size of its result as its worker reported it."""

    def __init__(self, scheduler: Scheduler, prefix: str):
        self.name = f"tasks-{prefix}"
        self.scheduler = scheduler
        self.prefix = prefix
        self.specs: dict[str, bytes] = {}
        self.result_bytes: dict[str, int] = {}

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        task = self.scheduler.tasks.get(key)
        if task is None or not str(key).startswith(self.prefix):
            return
        if finish == "processing":
            self.specs[str(key)] = cloudpickle.dumps(task.run_spec)
        elif finish == "memory":
            self.result_bytes[str(key)] = task.nbytes


@contextmanager
def scheduler_tasks(scheduler: Scheduler, prefix: str) -> Iterator[SchedulerTasks]:
    """Record what ``scheduler`` holds for the tasks of ``prefix`` while the block runs."""
    plugin = SchedulerTasks(scheduler, prefix)
    scheduler.add_plugin(plugin)
    try:
        yield plugin
    finally:
        scheduler.remove_plugin(plugin.name)


# The OpenAPI document the repository carries (make openapi); the served one must equal it.
COMMITTED_OPENAPI = Path(__file__).parents[1] / "backend" / "api" / "openapi.yml"
