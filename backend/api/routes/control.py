"""A client's control of its jobs: list them (``GET /tasks``), cancel one
(``DELETE /tasks/{token}``).

Routes only: the work is the store's and the history's (one Lua step per state change,
backend/jobs/lua/)."""

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from backend.api.deps import CallerDep, StoreDep
from backend.api.schemas import ALREADY_ENDED, BAD_INPUT, NOT_FOUND, JobEntry, JobLinks, JobPageOut
from backend.core.job import Job, JobStatus
from backend.core.kinds import KINDS
from backend.jobs import history

# A page holds this many jobs by default, and at most MAX_PAGE.
PAGE = 20
MAX_PAGE = 100
CURSOR_PATTERN = rf"^[0-9]{{{history.MS_DIGITS}}}:[0-9A-Za-z_-]{{1,64}}$"

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
    found = await run_in_threadpool(history.page, store.redis, caller.name, filters, limit, cursor)
    return JobPageOut(jobs=[entry(item.job, item.queue_position) for item in found.jobs], next_cursor=found.cursor)


@router.delete(
    "/tasks/{token}",
    name="cancel_job",
    response_model=Job,
    response_model_exclude_none=True,
    responses={**NOT_FOUND, **ALREADY_ENDED},
)
async def cancel_job(token: str, store: StoreDep, caller: CallerDep):
    """Cancel the job: it ends `errored`, with `"cancelled": true` and `"error": "cancelled
    by the client"`, and its record is the answer. A queued job ends at once; a running
    even-sum stops within about one block's time; an image already running ends when its
    one task does (its result is dropped). Cancelling again answers the same record."""
    return await run_in_threadpool(store.cancel, token, caller.name if caller.authenticated else None)


def entry(job: Job, queue_position: int | None) -> JobEntry:
    fields = job.model_dump(include=set(JobEntry.model_fields) - {"links", "queue_position"})
    links = JobLinks(
        record=f"/tasks/{job.token}",
        result=f"/{job.kind}/{job.token}/result" if job.kind in KINDS else None,
        report=f"/tasks/{job.token}/report",
    )
    return JobEntry(**fields, queue_position=queue_position, links=links)
