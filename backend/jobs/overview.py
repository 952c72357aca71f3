"""The operator's view of the whole service (``GET /overview``), and the one figure it needs
that nothing else writes: block-seconds, who used the cluster.

- **Lanes**: each client with work queued or running in a lane, or that used the lane in
  the window: its weight, queued and running jobs, the seconds its tasks computed in the
  last ``OVERVIEW_WINDOW_S`` and its share of the lane's (block-seconds over everyone's).
- **Dispatchers**: each id of ``dispatchers``, alive while its lease exists, with the age
  of its last heartbeat and the jobs its processing list holds.
- **Failures**: the last errored jobs, with the error their clients read (written by the
  final write, backend/jobs/lua/prelude.lua ``remember_end``; cancelled jobs left out).
- **Lead times**: per client, the p50, p90 and p99 (nearest rank) of the lead times of its
  jobs that finished in the last ``LEAD_TIMES_WINDOW_S`` (errored ones left out: their
  lead time says how fast they failed, not how long a result took).

Block-seconds are counted from each job's trace (compute/report.py), after the job ends:
the compute intervals of its tasks, by the workers' own start and stop, each added to the
minute its interval ended. Measured there, the figure is the cluster's time, not a wait
in the scheduler's queue; the price is that a job's seconds appear when it ends, in the
minutes they ran (a job longer than ``BLOCK_SECONDS_TTL_S`` loses its oldest minutes).
"""

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from redis import Redis

from backend.core.job import Lane
from backend.core.settings import Settings
from backend.jobs import keys

# Percentiles of the lead-time rows.
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LaneClient:
    client: str
    weight: int
    queued: int
    running: int
    block_seconds: float
    share: float


@dataclass(frozen=True)
class LaneView:
    lane: str
    clients: list[LaneClient]


@dataclass(frozen=True)
class DispatcherView:
    id: str
    alive: bool
    heartbeat_age_s: float
    jobs_held: int


@dataclass(frozen=True)
class Failure:
    token: str
    client: str | None
    kind: str | None
    error: str | None
    ended_at: float | None


@dataclass(frozen=True)
class LeadTimes:
    client: str
    jobs: int
    p50_s: float
    p90_s: float
    p99_s: float


@dataclass(frozen=True)
class Overview:
    window_s: int
    lanes: list[LaneView]
    dispatchers: list[DispatcherView]
    dashboard_url: str
    failures: list[Failure]
    lead_times: list[LeadTimes]


def add_block_seconds(redis: Redis, lane: str, client: str, spans: Iterable[tuple[float, float]], now: float) -> None:
    """Add the compute intervals ``spans`` ((start, stop), epoch s) of a job of ``client``
    to the lane's minutes they ended in; minutes already expired are not written again."""
    minutes: defaultdict[int, float] = defaultdict(float)
    for start, stop in spans:
        if stop > now - keys.BLOCK_SECONDS_TTL_S:
            minutes[int(stop // 60)] += max(0.0, stop - start)
    if not minutes:
        return
    with redis.pipeline(transaction=True) as pipe:
        for minute, seconds in minutes.items():
            pipe.hincrbyfloat(keys.block_seconds(lane, minute), client, seconds)
            pipe.expire(keys.block_seconds(lane, minute), keys.BLOCK_SECONDS_TTL_S)
        pipe.execute()


def read_overview(redis: Redis, settings: Settings) -> Overview:
    """Everything ``GET /overview`` shows: a few pipelined reads a section, by Redis's clock
    (the clock the final write scores lead times by)."""
    seconds, micros = redis.time()
    now = seconds + micros / 1e6
    return Overview(
        window_s=keys.OVERVIEW_WINDOW_S,
        lanes=[_lane(redis, lane, now, settings.default_weight) for lane in Lane],
        dispatchers=_dispatchers(redis, now),
        dashboard_url=settings.dashboard_url,
        failures=[_failure(raw) for raw in cast(list[bytes], redis.lrange(keys.FAILURES, 0, -1))],
        lead_times=_lead_times(redis, now),
    )


def _lane(redis: Redis, lane: Lane, now: float, default_weight: int) -> LaneView:
    """The lane's clients: those with jobs waiting (its ring), running, or block-seconds in the window."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.lrange(keys.ring(lane), 0, -1)
        pipe.hgetall(keys.running(lane))
        for minute in _window_minutes(now):
            pipe.hgetall(keys.block_seconds(lane, minute))
        ring, running_raw, *minutes = pipe.execute()
    running = {name.decode(): int(count) for name, count in running_raw.items()}
    used: defaultdict[str, float] = defaultdict(float)
    for bucket in minutes:
        for name, seconds in bucket.items():
            used[name.decode()] += float(seconds)
    clients = sorted({name.decode() for name in ring} | set(running) | set(used))
    with redis.pipeline(transaction=False) as pipe:
        for client in clients:
            pipe.llen(keys.queue(lane, client))
            pipe.hget(keys.client(client), "weight")
        answers = iter(pipe.execute())
    total = sum(used.values())
    rows = []
    for client in clients:
        queued, weight = next(answers), next(answers)
        seconds = used.get(client, 0.0)
        share = seconds / total if total else 0.0
        weight = int(weight) if weight else default_weight
        rows.append(LaneClient(client, weight, int(queued), running.get(client, 0), round(seconds, 6), round(share, 6)))
    return LaneView(lane, rows)


def _window_minutes(now: float) -> range:
    """The minutes of the window: the current one and those before it, OVERVIEW_WINDOW_S in all."""
    current = int(now // 60)
    return range(current - keys.OVERVIEW_WINDOW_S // 60 + 1, current + 1)


def _dispatchers(redis: Redis, now: float) -> list[DispatcherView]:
    found = cast(list[tuple[bytes, float]], redis.zrange(keys.DISPATCHERS, 0, -1, withscores=True))
    beats = [(member.decode(), score) for member, score in found]
    with redis.pipeline(transaction=False) as pipe:
        for dispatcher, _ in beats:
            pipe.exists(keys.lease(dispatcher))
            pipe.llen(keys.processing(dispatcher))
        answers = iter(pipe.execute())
    return [
        DispatcherView(dispatcher, bool(next(answers)), round(max(0.0, now - score / 1000), 3), int(next(answers)))
        for dispatcher, score in beats
    ]


def _lead_times(redis: Redis, now: float) -> list[LeadTimes]:
    """A row per client with jobs finished in the last LEAD_TIMES_WINDOW_S."""
    since = now - keys.LEAD_TIMES_WINDOW_S
    found = cast(list[bytes], redis.zrangebyscore(keys.LEAD_TIME_CLIENTS, since, "+inf"))
    clients = [name.decode() for name in found]
    with redis.pipeline(transaction=False) as pipe:
        for client in clients:
            pipe.zrangebyscore(keys.lead_times(client), since, "+inf")
        members = pipe.execute()
    rows = [_percentiles(client, found) for client, found in zip(clients, members, strict=True)]
    return [row for row in rows if row.jobs]


def _failure(raw: bytes) -> Failure:
    entry = json.loads(raw)
    return Failure(entry["token"], entry.get("client"), entry.get("kind"), entry.get("error"), entry.get("ended_at"))


def _percentiles(client: str, members: list[bytes]) -> LeadTimes:
    """A client's row: its jobs' count and lead-time percentiles (nearest rank)."""
    leads = sorted(float(member.decode().rsplit(" ", 1)[1]) for member in members)
    if not leads:
        return LeadTimes(client, 0, 0.0, 0.0, 0.0)
    p50, p90, p99 = (nearest_rank(leads, p) for p in PERCENTILES)
    return LeadTimes(client, len(leads), p50, p90, p99)


def nearest_rank(ordered: list[float], percentile: float) -> float:
    """The ``percentile`` of ``ordered`` (ascending, not empty) by the nearest-rank method:
    always one of the values, never an interpolation."""
    return ordered[max(0, math.ceil(percentile / 100 * len(ordered)) - 1)]
