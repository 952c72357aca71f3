"""Counters and gauges of the system, per kind and per client, for Prometheus and CloudWatch.

Dispatchers are separate processes, so each ended job is counted into one Redis hash
(``metrics``, one round trip) and the API's single ``GET /metrics`` serves them all,
with the queue figures read live from the queues. The client is a label; only
registered clients (``spacetime clients add``) get their own value, every other name is
counted as ``unregistered``, so the number of series stays bounded whatever names
clients send.
"""

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis import Redis

from backend.core.job import Lane
from backend.core.settings import Settings
from backend.jobs import keys
from backend.telemetry import cloudwatch
from backend.telemetry.timing import Timing

log = logging.getLogger(__name__)

# Histogram buckets in seconds: image jobs live in the first half, big even-sums in the second.
BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
HISTOGRAMS = ("lead_s", "exec_s", "queue_wait_s")
UNREGISTERED = "unregistered"
# How long a process trusts its list of registered clients.
REGISTERED_TTL_S = 10.0
# CloudWatch gauges are printed at most this often per dispatcher.
GAUGES_EVERY_S = 30.0


class RegisteredClients:
    """Which client names get a label of their own (cached for REGISTERED_TTL_S)."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._names: set[str] = set()
        self._read_at = -REGISTERED_TTL_S

    def label(self, client: str) -> str:
        return client if client in self.names() else UNREGISTERED

    def names(self) -> set[str]:
        if time.monotonic() - self._read_at > REGISTERED_TTL_S:
            self._names = {name.decode() for name in cast(set[bytes], self.redis.smembers(keys.CLIENTS))}
            self._read_at = time.monotonic()
        return self._names


@dataclass
class LaneFigures:
    """Live figures of one lane and client label."""

    waiting_jobs: int = 0
    waiting_blocks: int = 0
    running_jobs: int = 0
    blocks_in_flight: int = 0


def queue_figures(redis: Redis, registered: RegisteredClients) -> dict[tuple[str, str], LaneFigures]:
    """(lane, client label) -> figures, read from the queues and counters (a few round trips)."""
    figures: dict[tuple[str, str], LaneFigures] = defaultdict(LaneFigures)
    for lane in Lane:
        clients = [name.decode() for name in cast(list[bytes], redis.lrange(keys.ring(lane), 0, -1))]
        with redis.pipeline(transaction=False) as pipe:
            for client in clients:
                pipe.llen(keys.queue(lane, client))
            lengths = pipe.execute()
        for client, length in zip(clients, lengths, strict=True):
            figures[lane, registered.label(client)].waiting_jobs += length
        for key, field in ((keys.backlog_blocks(lane), "waiting_blocks"), (keys.running(lane), "running_jobs")):
            for name, value in cast(dict[bytes, bytes], redis.hgetall(key)).items():
                row = figures[lane, registered.label(name.decode())]
                setattr(row, field, getattr(row, field) + int(value))
    dispatchers = cast(list[bytes], redis.zrange(keys.DISPATCHERS, 0, -1))
    with redis.pipeline(transaction=False) as pipe:
        for dispatcher in dispatchers:
            pipe.hgetall(keys.in_flight(dispatcher.decode()))
        for in_flight in pipe.execute():
            for name, blocks in in_flight.items():
                lane, client = name.decode().split("|", 1)
                figures[lane, registered.label(client)].blocks_in_flight += int(blocks)
    return figures


class JobMetrics:
    """A dispatcher's writer of job counters (Redis) and CloudWatch lines (stdout)."""

    def __init__(self, redis: Redis, settings: Settings):
        self.redis = redis
        self.settings = settings
        self.registered = RegisteredClients(redis)
        self._gauges_at = -GAUGES_EVERY_S

    def count(self, timing: Timing) -> None:
        """Add the job to the counters and histograms that GET /metrics serves (one round trip)."""
        labels = f"{timing.kind}|{self.registered.label(timing.client)}"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(keys.METRICS, f"jobs_total|{labels}|{timing.status}", 1)
            for name in HISTOGRAMS:
                value = getattr(timing, name)
                if value is None:
                    continue
                pipe.hincrbyfloat(keys.METRICS, f"{name}_sum|{labels}", value)
                pipe.hincrby(keys.METRICS, f"{name}_count|{labels}", 1)
                if (bound := next((b for b in BUCKETS_S if value <= b), None)) is not None:
                    pipe.hincrby(keys.METRICS, f"{name}_bin|{labels}|{bound}", 1)
            if timing.bytes and timing.status == "finished":
                pipe.hincrby(keys.METRICS, f"bytes_total|{labels}", timing.bytes)
            pipe.expire(keys.METRICS, keys.METRICS_TTL_S)
            pipe.execute()
        if self.settings.cloudwatch_metrics:
            cloudwatch.emit(cloudwatch.job_line(timing))

    def publish_gauges(self) -> None:
        """Print the queue figures as CloudWatch lines, every GAUGES_EVERY_S at most."""
        if not self.settings.cloudwatch_metrics or time.monotonic() - self._gauges_at < GAUGES_EVERY_S:
            return
        self._gauges_at = time.monotonic()
        lanes: dict[str, LaneFigures] = defaultdict(LaneFigures)
        for (lane, client), row in sorted(queue_figures(self.redis, self.registered).items()):
            total = lanes[lane]
            total.waiting_jobs += row.waiting_jobs
            total.waiting_blocks += row.waiting_blocks
            total.running_jobs += row.running_jobs
            if client != UNREGISTERED:
                cloudwatch.emit(_gauge_line({"Lane": lane, "Client": client}, row))
        for lane, total in sorted(lanes.items()):
            cloudwatch.emit(_gauge_line({"Lane": lane}, total))


def _gauge_line(dimensions: dict[str, str], row: LaneFigures) -> dict[str, Any]:
    return cloudwatch.gauge_line(dimensions, row.waiting_jobs, row.waiting_blocks, row.running_jobs)


class RedisMetrics:
    """A prometheus_client collector: the dispatchers' counters and the live queue figures."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self.registered = RegisteredClients(redis)

    def collect(self) -> Iterator[Metric]:
        raw = {k.decode(): float(v) for k, v in cast(dict[bytes, bytes], self.redis.hgetall(keys.METRICS)).items()}
        jobs = CounterMetricFamily(
            "spacetime_jobs", "Jobs that ended, by kind, client and final status", labels=["kind", "client", "status"]
        )
        processed = CounterMetricFamily(
            "spacetime_processed_bytes", "Input bytes of finished jobs, by kind and client", labels=["kind", "client"]
        )
        restarts = CounterMetricFamily(
            "spacetime_child_restarts",
            "Children of `spacetime up` restarted after a crash, by child (redis-server, dispatcher, api)",
            labels=["child"],
        )
        for name, value in raw.items():
            metric, *labels = name.split("|")
            if metric == "jobs_total":
                jobs.add_metric(labels, value)
            elif metric == "bytes_total":
                processed.add_metric(labels, value)
            elif metric == "child_restarts_total":
                restarts.add_metric(labels, value)
        yield jobs
        yield processed
        yield restarts
        yield from _histograms(raw)
        yield from self._queue_gauges()

    def _queue_gauges(self) -> Iterator[Metric]:
        figures = queue_figures(self.redis, self.registered)
        waiting = GaugeMetricFamily("spacetime_queue_length", "Jobs waiting to be claimed (all lanes and clients)")
        waiting.add_metric([], sum(row.waiting_jobs for row in figures.values()) + self.redis.llen(keys.TASKS))
        yield waiting
        gauges: list[tuple[str, str, str]] = [
            ("waiting_jobs", "spacetime_backlog_jobs", "Jobs waiting, by lane and client"),
            ("waiting_blocks", "spacetime_backlog_blocks", "Blocks of the jobs waiting, by lane and client"),
            ("running_jobs", "spacetime_running_jobs", "Jobs claimed and not ended, by lane and client"),
            ("blocks_in_flight", "spacetime_blocks_in_flight", "Block tasks on the cluster now, by lane and client"),
        ]
        for field, name, text in gauges:
            family = GaugeMetricFamily(name, text, labels=["lane", "client"])
            for (lane, client), row in sorted(figures.items()):
                family.add_metric([lane, client], getattr(row, field))
            yield family


def _histograms(raw: dict[str, float]) -> Iterator[Metric]:
    series = sorted({tuple(name.split("|")[1:3]) for name in raw if "_count|" in name})
    for metric in HISTOGRAMS:
        family = HistogramMetricFamily(
            f"spacetime_{metric.removesuffix('_s')}_seconds",
            f"Job {metric.removesuffix('_s').replace('_', ' ')} time in seconds, by kind and client",
            labels=["kind", "client"],
        )
        for kind, client in series:
            labels = f"{kind}|{client}"
            count = raw.get(f"{metric}_count|{labels}")
            if count is None:
                continue
            # Stored per bin (one increment a job, not one per bucket); Prometheus wants
            # each bucket to count everything at or below its bound.
            bins = [raw.get(f"{metric}_bin|{labels}|{b}", 0.0) for b in BUCKETS_S]
            buckets: list[tuple[str, Any]] = [(str(b), n) for b, n in zip(BUCKETS_S, accumulate(bins), strict=True)]
            buckets.append(("+Inf", count))
            family.add_metric([kind, client], buckets, raw.get(f"{metric}_sum|{labels}", 0.0))
        yield family


def count_restarts(redis: Redis, restarts: Mapping[str, int]) -> None:
    """Add restarts of `spacetime up`'s children, by child name, to the hash GET /metrics serves."""
    with redis.pipeline(transaction=True) as pipe:
        for child, n in restarts.items():
            pipe.hincrby(keys.METRICS, f"child_restarts_total|{child}", n)
        pipe.expire(keys.METRICS, keys.METRICS_TTL_S)
        pipe.execute()
