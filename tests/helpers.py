"""Small helpers shared by the tests."""

import os
import random
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx

FINAL = ("finished", "errored")


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


def wait_status(api_url: str, kind: str, token: str, timeout_s: float = 30.0) -> list[dict]:
    """Poll until the job ends; return every distinct status body seen, in order."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = httpx.get(f"{api_url}/{kind}/{token}/status").json()
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
def api_process(redis_url: str, data_dir, first: str = ""):
    """`spacetime api` in a process of its own on a free port; yields (process, base URL).

    ``first`` is Python run in that process before the API starts (e.g. a resource limit).
    """
    port = free_port()
    environment = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SPACETIME_API_PORT": str(port),
        "SPACETIME_DATA_DIR": str(data_dir),
    }
    start = "import runpy, sys; sys.argv = ['spacetime', 'api']; runpy.run_module('backend.cli', run_name='__main__')"
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
