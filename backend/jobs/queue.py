"""The fair, reliable queue, dispatcher side: claim, wait, lease, reap, release.

A job's token is always in exactly one list: ``tasks`` (just submitted), its client's
queue in its lane, or one dispatcher's processing list; every move between them is one
Lua script (backend/lua). Claiming routes new tokens into per-client queues and picks by
weighted deficit round robin, so a client with a hundred jobs queued and a client with
one alternate. While alive, a dispatcher renews ``lease:<id>``; when it dies the lease
lapses and any other dispatcher's reaper puts its jobs back at the front of their queues.
No job is lost; a job may run twice (a dispatcher that stalled past its lease), and the
final write's holder check makes the late run's result a no-op.
"""

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError
from redis import Redis

from backend.core.exceptions import problems
from backend.core.job import Job, JobStatus, Lane, now_s
from backend.core.settings import Settings
from backend.jobs import keys, scripts


@dataclass(frozen=True)
class QueuePolicy:
    """What the pick script needs besides the queues: caps for clients with no settings of
    their own (registered clients override them in ``client:<name>``)."""

    max_attempts: int
    ttl_s: int
    default_weight: int
    default_max_running_bulk: int
    default_max_running_interactive: int  # 0: no limit

    @classmethod
    def of(cls, settings: Settings) -> "QueuePolicy":
        return cls(
            max_attempts=settings.max_attempts,
            ttl_s=settings.result_ttl_s,
            default_weight=settings.default_weight,
            default_max_running_bulk=settings.default_max_running_bulk,
            default_max_running_interactive=settings.default_max_running_interactive,
        )


@dataclass(frozen=True)
class Claim:
    """A claimed job. ``gave_up``: it had used up its attempts and is already `errored`;
    ``unreadable``: its record could not be parsed, and this says why (fail it)."""

    job: Job
    gave_up: bool = False
    unreadable: str | None = None


def new_dispatcher_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class JobQueue:
    """One dispatcher's view of the queues."""

    def __init__(self, redis: Redis, dispatcher_id: str, lease_s: float, policy: QueuePolicy):
        self.redis = redis
        self.id = dispatcher_id
        self.lease_s = lease_s
        self.policy = policy
        self.processing_key = keys.processing(dispatcher_id)
        self._claim = scripts.register(redis, "claim")
        self._reap = scripts.register(redis, "reap")
        self._release = scripts.register(redis, "release")

    def claim(self, lane: Lane) -> Claim | None:
        """The next job of ``lane`` by fair pick, now in our processing list; None if none."""
        answer = self._claim(
            keys=[self.processing_key],
            args=[
                lane,
                self.id,
                now_s(),
                self.policy.max_attempts,
                self.policy.ttl_s,
                self.policy.default_weight,
                self.policy.default_max_running_bulk,
                self.policy.default_max_running_interactive,
            ],
        )
        if answer is None:
            return None
        outcome, raw = answer[0].decode(), answer[1]
        return _parse_claim(raw, gave_up=outcome == "gave-up")

    def wait_for_work(self, lane: Lane, timeout_s: float = keys.CLAIM_TIMEOUT_S) -> None:
        """Sleep until a wake marker says there may be work in ``lane``, or ``timeout_s``."""
        self.redis.blpop([keys.wake(lane)], timeout=timeout_s)

    def wake(self, lane: Lane, loops: int) -> None:
        """Wake up to ``loops`` idle job loops of ``lane`` (ours at a stop; a woken loop of
        another dispatcher finds nothing to claim and sleeps again)."""
        if loops <= 0:
            return
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.wake(lane), *["1"] * loops)
            pipe.ltrim(keys.wake(lane), 0, keys.WAKE_MAX - 1)
            pipe.execute()

    def heartbeat(self, in_flight: dict[str, int]) -> None:
        """Renew the lease, say we are alive, publish our block tasks in flight."""
        lease_ms = int(self.lease_s * 1000)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.lease(self.id), "1", px=lease_ms)
            pipe.zadd(keys.DISPATCHERS, {self.id: int(time.time() * 1000)})
            pipe.delete(keys.in_flight(self.id))
            if in_flight:
                pipe.hset(keys.in_flight(self.id), mapping=cast(Any, in_flight))
                pipe.pexpire(keys.in_flight(self.id), lease_ms)
            pipe.execute()

    def reap(self, scan: bool = False) -> int:
        """Requeue the jobs of every dispatcher whose lease has lapsed.

        The ids come from the ``dispatchers`` set; with ``scan``, also from the names of
        the processing lists themselves, so that a list whose owner is missing from the
        set (it was deleted, or never written) is still found."""
        ids = {member.decode() for member in cast(list[bytes], self.redis.zrange(keys.DISPATCHERS, 0, -1))}
        if scan:
            prefix = keys.processing("")
            ids |= {name.decode()[len(prefix) :] for name in self.redis.scan_iter(match=f"{prefix}*", count=1000)}
        ids.discard(self.id)
        return int(self._reap(args=sorted(ids))) if ids else 0

    def release(self) -> int:
        """Requeue what we still hold and drop our lease (graceful shutdown)."""
        return int(self._release(args=[self.id]))


def _parse_claim(raw: bytes, gave_up: bool) -> Claim:
    """The claimed record as a Job. One pydantic cannot read still carries what the final
    write needs (token, dispatcher, attempt), so that it can be failed."""
    try:
        return Claim(Job.model_validate_json(raw), gave_up=gave_up)
    except ValidationError as exc:
        record = json.loads(raw)
        job = Job(
            token=str(record.get("token", "")),
            status=JobStatus.received,
            dispatcher=str(record.get("dispatcher", "")),
            attempts=int(record.get("attempts", 0)),
        )
        problem = problems(exc.errors(), "record", first_only=True)
        return Claim(job, unreadable=f"job record is not readable ({problem}); resubmit the job")
