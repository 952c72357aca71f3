"""Small helpers shared by the tests."""

import random
import socket
import time

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
