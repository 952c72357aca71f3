"""A client's usage against each of its bounds (``GET /me``): what it takes now, and its limit.

Read from the counters the bounds themselves are enforced on (backend/jobs/keys.py), so
the figures are what the next request will be judged by: the backlog and held bytes the
submit script checks, the running jobs the pick counts, the uploads in flight the
reservation script counts. Limits are the client's own (`spacetime clients add`, or a
field set in ``client:<name>``), else the settings' defaults; 0 means no limit and reads
as None. The rate comes from the API's limiter (backend/api/admission.py), which owns it.
"""

import time
from dataclasses import dataclass
from typing import cast

from redis import Redis

from backend.core.job import Lane
from backend.core.settings import Settings
from backend.jobs import keys
from backend.jobs.clients import ClientSettings

# The kinds of upload a client may have in flight (backend/jobs/reservations.py).
UPLOAD_KINDS = ("stream", "direct")


@dataclass(frozen=True)
class Quota:
    """One bound of a client: ``used`` of ``limit`` (None: no limit), in ``unit``."""

    name: str
    label: str
    used: int
    limit: int | None
    unit: str


def quotas(redis: Redis, settings: Settings, client: ClientSettings, rate: Quota) -> list[Quota]:
    """Every bound of ``client`` with its usage now, ``rate`` (the limiter's) first."""
    name = client.name
    with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.BACKLOG_BYTES, name)
        pipe.hget(keys.running(Lane.bulk), name)
        pipe.hget(keys.running(Lane.interactive), name)
        pipe.hget(keys.HELD_BYTES, name)
        pipe.hmget(keys.client(name), ["max_running_interactive", "max_held_bytes"])
        for kind in UPLOAD_KINDS:
            pipe.zcount(keys.uploads(kind, name), time.time(), "+inf")  # lapsed leases count no more
        backlog, bulk, interactive, held, overrides, streams, directs = pipe.execute()
    max_interactive, max_held = cast(list[bytes | None], overrides)
    return [
        rate,
        Quota(
            "backlog_bytes",
            "backlog (input bytes queued or running)",
            _int(backlog),
            _limit(client.max_backlog_bytes),
            "bytes",
        ),
        Quota("running_bulk", "running bulk jobs", _int(bulk), _limit(client.max_running_bulk), "jobs"),
        Quota(
            "running_interactive",
            "running interactive jobs",
            _int(interactive),
            _limit(_int(max_interactive, settings.default_max_running_interactive)),
            "jobs",
        ),
        Quota(
            "held_bytes",
            "bytes held in Redis",
            _int(held),
            _limit(_int(max_held, settings.default_max_held_bytes)),
            "bytes",
        ),
        Quota("uploads", "uploads in flight", int(streams), _limit(settings.default_max_uploads), "uploads"),
        Quota(
            "direct_uploads",
            "direct uploads pending",
            int(directs),
            _limit(settings.default_max_direct_uploads),
            "uploads",
        ),
    ]


def _int(raw: bytes | None, default: int = 0) -> int:
    return default if raw is None else int(raw)


def _limit(value: int) -> int | None:
    """A bound as shown: 0 (no limit) is None."""
    return value or None
