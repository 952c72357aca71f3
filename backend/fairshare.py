"""The window of a bulk job: how many of its block tasks it keeps in flight on the cluster.

Dask runs queued tasks of equal priority in the order they were submitted, so a job that
keeps ``w`` blocks in flight, and submits the next as one finishes, gets about ``w`` turns
out of every ``sum(w)``. Windows proportional to the clients' weights therefore share the
workers by weight, and a job that arrives late starts at once instead of after every
block queued before it. The window of a client's job is its weighted share of
``IN_FLIGHT_PER_THREAD`` x the bulk worker threads, split over its running bulk jobs.
"""

import math
import threading
import time
from collections.abc import Callable
from typing import cast

from redis import Redis

from backend import keys
from backend.job import Lane

# Blocks in flight per bulk worker thread, over all jobs: one running and one queued
# behind it, so a thread never idles while the dispatcher hears of a finished block.
IN_FLIGHT_PER_THREAD = 2
# How long a dispatcher reuses the running jobs and weights it read (windows change at
# this pace; each read is one Redis round trip).
REFRESH_S = 0.25


class FairShare:
    """Windows of bulk jobs, from the running jobs of every client (Redis) and the bulk
    worker threads (Dask)."""

    def __init__(self, redis: Redis, threads: Callable[[], int], default_weight: int):
        self.redis = redis
        self.threads = threads
        self.default_weight = default_weight
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._running: dict[str, int] = {}
        self._weights: dict[str, int] = {}

    def window(self, client: str) -> int:
        running, weights = self._snapshot()
        weight = weights.get(client, self.default_weight)
        total_weight = sum(weights.get(c, self.default_weight) for c in running) + (0 if client in running else weight)
        share = IN_FLIGHT_PER_THREAD * self.threads() * weight / total_weight
        return max(1, math.ceil(share / max(1, running.get(client, 1))))

    def _snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            if time.monotonic() - self._read_at > REFRESH_S:
                raw = cast(dict[bytes, bytes], self.redis.hgetall(keys.running(Lane.bulk)))
                running = {name.decode(): int(count) for name, count in raw.items()}
                with self.redis.pipeline(transaction=False) as pipe:
                    for name in running:
                        pipe.hget(keys.client(name), "weight")
                    weights = {
                        name: int(w) if w else self.default_weight
                        for name, w in zip(running, pipe.execute(), strict=True)
                    }
                self._running, self._weights, self._read_at = running, weights, time.monotonic()
            return self._running, self._weights
