"""Waiting in tests: for a condition, for a job's status, bounded every time."""

import time

import httpx

FINAL = ("finished", "errored")


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
