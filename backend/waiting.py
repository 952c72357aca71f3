"""Bounded waits for a dependency to come up (Redis, the scheduler, the API at start-up)."""

import time
from collections.abc import Callable
from typing import Any

# Backoff of the retries: from the first delay, doubling, up to the cap.
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0


def wait_for(check: Callable[[], Any], what: str, where: str, timeout_s: float) -> None:
    """Call ``check`` until it succeeds, backing off; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = FIRST_DELAY_S
    while True:
        try:
            check()
            return
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"{what} at {where} not reachable after {timeout_s:.0f}s: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
