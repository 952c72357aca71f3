"""A client's control of its jobs: list them (``GET /tasks``), cancel one
(``DELETE /tasks/{token}``), watch one live (``GET /tasks/{token}/events``), run one
again (``POST /tasks/{token}/rerun``).

Routes only: the work is the store's and the history's (one Lua step per state change,
backend/jobs/lua/)."""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend.api.deps import CallerDep, IdempotencyKeyDep, SettingsDep, StoreDep, SubmitterDep
from backend.api.events import check_room, ended_before, job_events
from backend.api.holds import Holds
from backend.api.lookup import client_record, owned_job
from backend.api.schemas import (
    ALREADY_ENDED,
    BAD_INPUT,
    KEY_REUSED,
    NOT_FOUND,
    OVER_QUOTA,
    RECORD_OPERATION,
    ErrorOut,
    JobEntry,
    JobLinks,
    JobOut,
    JobPageOut,
    TokenOut,
)
from backend.core.job import Job, JobStatus
from backend.core.kinds import KINDS
from backend.jobs import history

# A page holds this many jobs by default, and at most MAX_PAGE.
PAGE = 20
MAX_PAGE = 100
CURSOR_PATTERN = rf"^[0-9]{{{history.MS_DIGITS}}}:[0-9A-Za-z_-]{{1,64}}$"

# One server-sent event (OpenAPI 3.1: the schema of a text/event-stream is each event's).
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"enum": ["progress", "finished", "errored"]},
        "id": {"type": "string", "description": "Send as Last-Event-ID to resume after this event"},
        "data": {"type": "string", "contentMediaType": "application/json", "description": "The job's status"},
        "retry": {"type": "integer"},
    },
}

router = APIRouter()


@router.get(
    "/tasks", name="list_jobs", response_model=JobPageOut, response_model_exclude_none=True, responses=BAD_INPUT
)
async def list_jobs(
    store: StoreDep,
    caller: CallerDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="Only jobs of this kind")] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11, description="Submitted then or later (epoch s)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Jobs per page")] = PAGE,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the page before")] = None,
):
    """Your jobs, newest first, a page at a time. Pages hold still while you submit more: a
    job is never listed twice or skipped. A job stays listed for a week after its submit
    (its summary outlives its record), so last week's jobs and their reports can be found."""
    filters = history.Filters(status, kind, since)
    found = await run_in_threadpool(history.page, store.redis, caller.name, caller.client_id, filters, limit, cursor)
    return JobPageOut(jobs=[entry(item.job, item.queue_position) for item in found.jobs], next_cursor=found.cursor)


@router.delete(
    "/tasks/{token}",
    name="cancel_job",
    response_model=JobOut,
    response_model_exclude_none=True,
    responses={**NOT_FOUND, **ALREADY_ENDED},
)
async def cancel_job(token: str, store: StoreDep, caller: CallerDep, settings: SettingsDep):
    """Cancel the job: it ends `errored`, with `"cancelled": true` and `"error": "cancelled
    by the client"`, and its record is the answer. A queued job ends at once; a running
    even-sum stops within about one block's time; an image already running ends when its
    one task does (its result is dropped). Its uploaded file goes with it, unless it was
    kept (`keep_input`). Cancelling again answers the same record."""
    await run_in_threadpool(owned_job, store, token, caller)  # another registration's job: 404
    job = await run_in_threadpool(store.cancel, token, caller.name if caller.authenticated else None)
    await run_in_threadpool(store.drop_input, job, settings)
    return client_record(job, settings.uploads_url)


@router.get(
    "/tasks/{token}/events",
    name="job_events",
    response_class=Response,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
            "description": "Server-sent events: `progress` (data: the status, with progress) at each change, "
            "then one `finished` or `errored` (data: the status, with error), and the stream ends",
        },
        204: {"description": "The Last-Event-ID was the terminal event's: nothing more will come"},
        **NOT_FOUND,
        **OVER_QUOTA,
    },
)
async def watch_job(
    token: str,
    store: StoreDep,
    caller: CallerDep,
    request: Request,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after this event")
    ] = None,
):
    """The job's life as server-sent events, for a progress bar without polling (curl -N,
    or an EventSource in a browser). Reconnect with `Last-Event-ID` to resume where a
    dropped stream stopped: only newer events come, and exactly one terminal event in all."""

    async def read() -> Job:
        return await run_in_threadpool(owned_job, store, token, caller)

    await read()  # an unknown token, or another client's: a 404 before any stream
    if ended_before(last_event_id):
        return Response(status_code=204)
    streams: Holds = request.app.state.event_streams
    check_room(streams, caller.name)
    events = job_events(token, read, request.app.state.endings, last_event_id, streams, caller.name)
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post(
    "/tasks/{token}/rerun",
    name="rerun_job",
    status_code=201,
    response_model=TokenOut,
    responses={
        201: {
            "description": "Accepted: the new job's token",
            "links": {"record": {"operationId": RECORD_OPERATION, "parameters": {"token": "$response.body#/token"}}},
        },
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "The job's input is no longer kept (an image's goes with its end)"},
        **KEY_REUSED,
        **OVER_QUOTA,
    },
)
async def rerun_job(
    token: str, store: StoreDep, caller: CallerDep, submitter: SubmitterDep, key: IdempotencyKeyDep = None
):
    """Run the job's input again, as a new job: an even-sum's file (its URL) as long as the
    file is kept, an image's bytes while its job has not ended."""
    job = await run_in_threadpool(owned_job, store, token, caller)
    return TokenOut(token=(await submitter.rerun(caller, job, key)).token)


def entry(job: Job, queue_position: int | None) -> JobEntry:
    fields = job.model_dump(include=set(JobEntry.model_fields) - {"links", "queue_position"})
    links = JobLinks(
        record=f"/tasks/{job.token}",
        result=f"/{job.kind}/{job.token}/result" if job.kind in KINDS else None,
        report=f"/tasks/{job.token}/report",
    )
    return JobEntry(**fields, queue_position=queue_position, links=links)
