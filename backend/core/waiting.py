"""Waiting on dependencies: bounded waits for one to come up (Redis, the scheduler, the
API at start-up), and outages told in two log lines, not a traceback per retry."""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis import RedisError

from backend.core.redact import redact, redact_text

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
                # Redacted here, not only in the log: callers may show the message anywhere.
                reason = redact_text(str(exc))
                raise TimeoutError(f"{what} at {redact(where)} not reachable after {timeout_s:.0f}s: {reason}") from exc
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)


class Outage:
    """Tells the log once when a dependency goes away and once when it is back, instead of
    a traceback for every retry of every thread.

    ``with outage.watch(): ...`` swallows the dependency's errors (``errors``) and marks
    the outage; the first success after it ends the outage."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        errors: tuple[type[BaseException], ...] = (RedisError,),
        on_start: Callable[[], Any] | None = None,
    ):
        self.log = log
        self.what = what
        self.errors = errors
        # Called once as an outage starts: e.g. drop pooled connections, which would all
        # fail once after the dependency is back and each look like a new outage.
        self.on_start = on_start
        self._since: float | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._since is not None

    @contextmanager
    def watch(self) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except self.errors as exc:
            with self._lock:
                if self._since is None:
                    self._since = time.monotonic()
                    self.log.error("%s is unreachable (%s); retrying every second", self.what, exc)
                    if self.on_start:
                        self.on_start()
            return
        with self._lock:
            # A block that began before the outage did may have finished its calls before it;
            # only one that began after it proves the dependency is back.
            if self._since is not None and started > self._since:
                self.log.warning("%s is back after %.1f s", self.what, time.monotonic() - self._since)
                self._since = None
