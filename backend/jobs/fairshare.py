"""How a bulk job's block tasks share the cluster with other clients' (issue: many
clients): how many it keeps in flight, and in what order Dask runs them.

- **Window**: a job keeps its client's weighted share of ``IN_FLIGHT_PER_THREAD`` x the
  bulk worker threads in flight, split over the client's running bulk jobs, and submits
  the next block as one finishes: a 5 GB job never floods the scheduler, and the workers
  always have the next block at hand.
- **Order**: start-time fair queueing (Goyal et al., 1996) across every dispatcher, in
  Redis (backend/jobs/lua/tag.lua). Each block gets a start tag, the later of the lane's
  virtual time and the end of its client's previous block, which ends 1/weight later;
  its Dask priority is minus that tag, so the waiting blocks run in tag order. Clients
  with blocks waiting get turns in proportion to their weights, and a client that
  arrives late starts at the virtual time: its first block runs next, not after every
  block queued before it.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from redis import Redis

from backend.core.job import Job, Lane
from backend.jobs import keys, scripts

# Blocks in flight per bulk worker thread, over all jobs. The order they run in is the fair
# queue's (tags), so windows only bound what waits on the cluster; they must leave every
# client blocks waiting behind its running ones, or a client's share is lost each time
# the dispatcher is a moment late with its next block (measured: 2 gave a weight-2
# client 45% instead of 50% against two of weight 1; 4 does not lose it).
IN_FLIGHT_PER_THREAD = 4
# The least a job keeps in flight: one running, one waiting behind it.
MIN_WINDOW = 2
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
        self._tag = scripts.register(redis, "tag")
        self._advance = scripts.register(redis, "advance")
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._running: dict[str, int] = {}
        self._weights: dict[str, int] = {}

    def window(self, client: str) -> int:
        running, weights = self._snapshot()
        weight = weights.get(client, self.default_weight)
        total_weight = sum(weights.get(c, self.default_weight) for c in running) + (0 if client in running else weight)
        share = IN_FLIGHT_PER_THREAD * self.threads() * weight / total_weight
        return max(MIN_WINDOW, math.ceil(share / max(1, running.get(client, 1))))

    def pacing(self, job: Job) -> "JobPacing":
        """How ``job``'s blocks go to the cluster (compute.reduction.Pacing)."""
        return JobPacing(self, job.client)

    def weight(self, client: str) -> int:
        return self._snapshot()[1].get(client, self.default_weight)

    def start_tag(self, client: str) -> float:
        weight = self.weight(client)
        return float(self._tag(args=[Lane.bulk, client, weight, keys.FAIR_TAGS_TTL_S]))

    def advance(self, start_tag: float) -> None:
        self._advance(args=[Lane.bulk, repr(start_tag), keys.FAIR_TAGS_TTL_S])

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


@dataclass
class JobPacing:
    """One bulk job's window and block priorities (compute.reduction.Pacing)."""

    share: FairShare
    client: str

    def window(self) -> int:
        return self.share.window(self.client)

    def priority(self) -> float:
        return -self.share.start_tag(self.client)

    def done(self, priorities: list[float]) -> None:
        if priorities:
            self.share.advance(-min(priorities))
