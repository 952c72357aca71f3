"""Finding a caller's job for a route: ownership, waiting for its end, what to answer."""

import itertools
from collections.abc import Iterator
from functools import partial

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from backend.api.endings import Endings
from backend.api.schemas import JobOut, StatusOut
from backend.core.exceptions import JobNotFound
from backend.core.job import Job, JobStatus
from backend.core.settings import Settings
from backend.jobs.clients import ClientSettings
from backend.jobs.store import JobStore
from compute.files import file_pieces


def owned_job(store: JobStore, token: str, caller: ClientSettings, kind: str | None = None) -> Job:
    """The job, if the caller may see it; JobNotFound (exactly as for a token that never
    existed) for a token of another kind or, in keys mode, of another client.

    In open mode names are not proven, so a token (128 random bits) is what grants access:
    a report link opened in a browser, which sends no X-Client-Id, still works."""
    job = store.get(token)
    if (kind is not None and job.kind != kind) or (caller.authenticated and not _owns(caller, job)):
        raise JobNotFound(token)
    return job


def _owns(caller: ClientSettings, job: Job) -> bool:
    """The job was submitted with the caller's key's registration: a name removed and
    added again is another registration. (A key made before ids, and its jobs, have
    none: they still match by name.)"""
    return job.client_id == caller.client_id and job.client == caller.name


def owned_past_job(store: JobStore, token: str, caller: ClientSettings) -> Job:
    """owned_job, for a job whose record may have expired: its summary answers for it (the
    routes of what outlives a record, such as its report)."""
    job = store.summary(token)
    if caller.authenticated and not _owns(caller, job):
        raise JobNotFound(token)
    return job


async def waited_job(
    request: Request, store: JobStore, token: str, caller: ClientSettings, wait_s: float, kind: str | None = None
) -> Job:
    """owned_job, read when the job is final or ``wait_s`` has passed (backend/api/endings.py).

    Store calls are blocking: they run in the threadpool, as in a sync route. Ownership is
    checked by the first read, before any wait: another client's token is a 404 at once."""

    async def read() -> Job:
        return await run_in_threadpool(owned_job, store, token, caller, kind)

    if wait_s <= 0:
        return await read()
    endings: Endings = request.app.state.endings
    return await endings.read_when_final(token, read, wait_s, partial(client_gone, request), caller.name)


async def client_gone(request: Request) -> None:
    """Returns when the client hangs up. A GET has no body: after its one (empty) body
    message, the server's next message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def job_status(job: Job) -> StatusOut:
    return StatusOut(
        status=job.status,
        error=job.error if job.status is JobStatus.errored else None,
        progress=job.progress if job.status is JobStatus.received else None,
    )


def client_record(job: Job, uploads_url: str) -> JobOut:
    """The record a client is shown: API URLs, never server paths or internal fields."""
    shown = job.model_dump(include=set(JobOut.model_fields))
    shown["input_url"] = job.given_input_url(uploads_url)
    shown["report_url"] = f"/tasks/{job.token}/report" if job.report_url else None
    return JobOut(**shown)


def finished_output(store: JobStore, job: Job, settings: Settings) -> bytes | Iterator[bytes]:
    """A finished job's output (JobNotFound when there is none), from Redis or its file:
    whole when it is one piece (most are: sent with its length, no more hops), else its
    first pieces read and the rest to be read as it is sent, so that a client fetching a
    256 MB result many times at once holds the API to a piece or two a fetch, not the result."""
    if job.status is not JobStatus.finished:
        pieces: Iterator[bytes] = iter(())
    elif job.output_url is not None:
        pieces = file_pieces(job.output_url, settings.storage_options(job.output_url))
    else:
        pieces = store.output_pieces(job.token)
    first = next(pieces, None)
    if first is None:
        raise JobNotFound(job.token)
    second = next(pieces, None)
    return first if second is None else itertools.chain([first, second], pieces)
