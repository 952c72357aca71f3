"""Requests an API process holds open (event streams, status requests that wait), counted in
all and per client: each holds a connection and a task of the process, so the process
bounds them, and one client must not take every one of them from the others."""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class Holds:
    """How many requests this process holds open, in all (at most ``limit``) and per client
    (at most ``per_client``). Single-threaded use: the event loop's."""

    def __init__(self, limit: int, per_client: int):
        self.limit = limit
        self.per_client = per_client
        self.total = 0
        self._by_client: Counter[str] = Counter()

    def refusal(self, client: str) -> str | None:
        """Why ``client`` may not hold one more now; None when it may."""
        if self.total >= self.limit:
            return f"this API process holds {self.limit} already"
        if self._by_client[client] >= self.per_client:
            return f"client {client!r} holds {self.per_client} already on this API process, its most"
        return None

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Count one request of ``client`` for the block."""
        self.total += 1
        self._by_client[client] += 1
        try:
            yield
        finally:
            self.total -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]
