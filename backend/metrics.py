"""Job timings: measured by dispatchers, logged, stored, counted for Prometheus.

Every job, finished or errored, gets one timing record (see docs/metrics.md):

    queue_wait_s    requested -> received (time in the Redis queue)
    exec_s          the dispatcher's wall time around the Dask computation
    lead_s          requested -> finished, what the user waited
    task_compute_s  sum of compute intervals of the job's own tasks (task stream)

The record is logged as ONE JSON line, written as ``<token>.json`` to the reports
store, and merged into the job record. Counters and histograms go to a Redis hash so
that any number of dispatcher processes feed the single ``GET /metrics`` of the API.
"""

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import cast

import fsspec
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from redis import Redis

from backend import keys
from backend.job import Job, now_s
from backend.settings import Settings

log = logging.getLogger("spacetime.timing")

# Histogram buckets in seconds: image jobs live in the first half, big even-sums in the second.
BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
HISTOGRAMS = ("lead_s", "exec_s", "queue_wait_s")


@dataclass
class Timing:
    """The timing record of one job."""

    token: str
    kind: str
    client: str
    status: str
    requested_at: float | None
    received_at: float | None
    finished_at: float
    queue_wait_s: float | None
    exec_s: float
    lead_s: float | None
    task_compute_s: float | None = None
    bytes: int | None = None
    error: str | None = None
    report_url: str | None = None
    timing_url: str | None = None

    def record_fields(self) -> dict:
        """What goes into the Redis job record (status and identity are already there)."""
        skip = {"token", "kind", "client", "status", "requested_at", "received_at", "error"}
        return {k: v for k, v in asdict(self).items() if k not in skip and v is not None}


def make_timing(job: Job, status: str, exec_s: float, **extra) -> Timing:
    finished_at = now_s()
    return Timing(
        token=job.token,
        kind=job.kind,
        client=job.client,
        status=status,
        requested_at=job.requested_at,
        received_at=job.received_at,
        finished_at=finished_at,
        queue_wait_s=_elapsed(job.requested_at, job.received_at),
        exec_s=round(exec_s, 6),
        lead_s=_elapsed(job.requested_at, finished_at),
        **extra,
    )


def _elapsed(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start), 6)


class Stopwatch:
    """``with Stopwatch() as w: ...`` then ``w.seconds``."""

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start


def report_store_url(settings: Settings, token: str, suffix: str) -> str:
    return f"{settings.reports_url}/{token}.{suffix}"


def save_timing(settings: Settings, timing: Timing) -> None:
    """Log the record as one JSON line and write it to the reports store."""
    line = json.dumps(asdict(timing), separators=(",", ":"))
    log.info(line)
    url = timing.timing_url or report_store_url(settings, timing.token, "json")
    with fsspec.open(url, "w", auto_mkdir=True, **settings.storage_options(url)) as f:
        f.write(line)


def count_job(redis: Redis, timing: Timing) -> None:
    """Add the job to the counters and histograms that GET /metrics serves (one round trip)."""
    kind = timing.kind
    with redis.pipeline(transaction=True) as pipe:
        pipe.hincrby(keys.METRICS, f"jobs_total|{kind}|{timing.status}", 1)
        for name in HISTOGRAMS:
            value = getattr(timing, name)
            if value is None:
                continue
            pipe.hincrbyfloat(keys.METRICS, f"{name}_sum|{kind}", value)
            pipe.hincrby(keys.METRICS, f"{name}_count|{kind}", 1)
            for bound in BUCKETS_S:
                if value <= bound:
                    pipe.hincrby(keys.METRICS, f"{name}_bucket|{kind}|{bound}", 1)
        if timing.bytes and timing.status == "finished":
            pipe.hincrby(keys.METRICS, f"bytes_total|{kind}", timing.bytes)
        pipe.expire(keys.METRICS, keys.METRICS_TTL_S)
        pipe.execute()


class RedisMetrics:
    """A prometheus_client collector that reads the dispatchers' counters from Redis."""

    def __init__(self, redis: Redis):
        self.redis = redis

    def collect(self):
        hash_ = cast(dict[bytes, bytes], self.redis.hgetall(keys.METRICS))
        raw = {k.decode(): float(v) for k, v in hash_.items()}
        jobs = CounterMetricFamily(
            "spacetime_jobs", "Jobs that ended, by kind and final status", labels=["kind", "status"]
        )
        processed = CounterMetricFamily(
            "spacetime_processed_bytes", "Input bytes of finished jobs, by kind", labels=["kind"]
        )
        for name, value in raw.items():
            metric, *labels = name.split("|")
            if metric == "jobs_total":
                jobs.add_metric(labels, value)
            elif metric == "bytes_total":
                processed.add_metric(labels, value)
        yield jobs
        yield processed
        yield from self._histograms(raw)
        queue = GaugeMetricFamily("spacetime_queue_length", "Jobs waiting in the Redis list `tasks`")
        queue.add_metric([], self.redis.llen(keys.TASKS))
        yield queue
        yield child_restarts(raw)

    @staticmethod
    def _histograms(raw: dict):
        kinds = {name.split("|")[1] for name in raw if "_count|" in name}
        for metric in HISTOGRAMS:
            family = HistogramMetricFamily(
                f"spacetime_{metric.removesuffix('_s')}_seconds",
                f"Job {metric.removesuffix('_s').replace('_', ' ')} time in seconds, by kind",
                labels=["kind"],
            )
            for kind in sorted(kinds):
                count = raw.get(f"{metric}_count|{kind}")
                if count is None:
                    continue
                buckets = [(str(b), raw.get(f"{metric}_bucket|{kind}|{b}", 0.0)) for b in BUCKETS_S]
                buckets.append(("+Inf", count))
                family.add_metric([kind], buckets, raw.get(f"{metric}_sum|{kind}", 0.0))
            yield family


# -- `spacetime up`'s supervisor -------------------------------------------------------------


def count_restarts(redis: Redis, restarts: Mapping[str, int]) -> None:
    """Add restarts of `spacetime up`'s children, by child name, to the hash GET /metrics serves."""
    with redis.pipeline(transaction=True) as pipe:
        for child, n in restarts.items():
            pipe.hincrby(keys.METRICS, f"child_restarts_total|{child}", n)
        pipe.expire(keys.METRICS, keys.METRICS_TTL_S)
        pipe.execute()


def child_restarts(raw: dict[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "spacetime_child_restarts",
        "Children of `spacetime up` restarted after a crash, by child (redis-server, dispatcher, api)",
        labels=["child"],
    )
    for name, value in raw.items():
        metric, *labels = name.split("|")
        if metric == "child_restarts_total":
            family.add_metric(labels, value)
    return family
