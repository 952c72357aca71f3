"""A client's jobs, newest first, for ``GET /tasks``: pages that hold still while jobs come.

submit.lua adds each job to its client's sorted set (keys.JOBS) under a member that sorts by
submit time, then token: ``<requested_at in ms, 13 digits>:<token>``. A page is read
backwards from its cursor, the last member the page before showed, exclusive. A job
submitted meanwhile sorts after every cursor handed out, so it never shifts a later page:
no job is listed twice or skipped. What a job is now comes from its record while it lives,
else from its summary (keys.SUMMARY), which outlives the record by days.
"""

from dataclasses import dataclass
from typing import cast

from pydantic import ValidationError
from redis import Redis

from backend.core.job import Job, JobStatus
from backend.jobs import keys

MS_DIGITS = 13
# Members read per round trip while filtering ...
BATCH = 100
# ... and at most this many per request, so that a filter matching few of many jobs still
# answers at once: the page is short then, and its cursor goes on from where it stopped.
MAX_SCANNED = 2000


def member(requested_at: float, token: str) -> str:
    """The job's member in its client's list: sorts by submit time, then token."""
    return f"{max(round(requested_at * 1000), 0):0{MS_DIGITS}d}:{token}"


@dataclass(frozen=True)
class Filters:
    status: JobStatus | None = None
    kind: str | None = None
    since: float | None = None  # epoch s: jobs submitted then or later

    def match(self, job: Job) -> bool:
        return (self.status is None or job.status == self.status) and (self.kind is None or job.kind == self.kind)


@dataclass(frozen=True)
class Listed:
    job: Job
    # Jobs ahead of it in its client's queue (0: it runs next), while it is `requested`.
    queue_position: int | None = None


@dataclass(frozen=True)
class Page:
    jobs: list[Listed]
    cursor: str | None  # where the next page starts; None: this was the last


def page(
    redis: Redis, client: str, client_id: str | None, filters: Filters, limit: int, cursor: str | None = None
) -> Page:
    """Up to ``limit`` of ``client``'s jobs that match, newest first, after ``cursor``. Only
    the jobs of registration ``client_id`` are listed: the list is kept by name, and a name
    removed and added again is another client (backend/jobs/clients.py)."""
    key = keys.jobs(client)
    bottom = "-" if filters.since is None else f"[{member(filters.since, '')}"
    top = f"({cursor}" if cursor else "+"
    found: list[Job] = []
    scanned = 0
    while len(found) < limit and scanned < MAX_SCANNED:
        members = [m.decode() for m in cast(list[bytes], redis.zrevrangebylex(key, top, bottom, start=0, num=BATCH))]
        if not members:
            return Page(_with_positions(redis, found), None)
        for name, job in zip(members, _read(redis, members), strict=True):
            scanned += 1
            top = f"({name}"
            if job is not None and job.client_id == client_id and filters.match(job):
                found.append(job)
                if len(found) == limit:
                    break
    return Page(_with_positions(redis, found), top[1:])


def _read(redis: Redis, members: list[str]) -> list[Job | None]:
    """Each job as its record says, else as its summary says; None when both are gone."""
    tokens = [name.split(":", 1)[1] for name in members]
    records = cast(list[bytes | None], redis.mget([keys.result(t) for t in tokens]))
    missing = [t for t, raw in zip(tokens, records, strict=True) if raw is None]
    summaries: dict[str, bytes | None] = {}
    if missing:
        found = cast(list[bytes | None], redis.mget([keys.summary(t) for t in missing]))
        summaries = dict(zip(missing, found, strict=True))
    jobs = []
    for token, raw in zip(tokens, records, strict=True):
        raw = raw if raw is not None else summaries.get(token)
        try:
            jobs.append(Job.model_validate_json(raw) if raw is not None else None)
        except ValidationError:  # unreadable: GET /tasks/<token> says why
            jobs.append(Job(token=token, status=JobStatus.errored, error="the job record is not readable"))
    return jobs


def _with_positions(redis: Redis, jobs: list[Job]) -> list[Listed]:
    """Queued jobs get their place in their client's queue (not yet routed from `tasks`:
    behind everything queued)."""
    queued = [job for job in jobs if job.status is JobStatus.requested and job.lane is not None]
    with redis.pipeline(transaction=False) as pipe:
        for job in queued:
            queue = keys.queue(job.lane or "", job.client)
            pipe.lpos(queue, job.token)
            pipe.llen(queue)
        answers = pipe.execute()
    positions = {
        job.token: position if position is not None else length
        for job, position, length in zip(queued, answers[::2], answers[1::2], strict=True)
    }
    return [Listed(job, positions.get(job.token)) for job in jobs]
