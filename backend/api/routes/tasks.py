"""Any job by its token: ``/tasks/{token}`` (the whole record) and its performance report.
(``tasks`` is the original system's word, kept in the path; the code says job.)"""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from backend.api.deps import CallerDep, SettingsDep, StoreDep, WaitDep
from backend.api.lookup import client_record, owned_past_job, waited_job
from backend.api.schemas import NOT_FOUND, RECORD_OPERATION, JobOut
from backend.core.exceptions import JobNotFound
from backend.telemetry.reports import ReportWriter

log = logging.getLogger(__name__)

router = APIRouter()


@router.get(
    "/tasks/{token}",
    name=RECORD_OPERATION,
    response_model=JobOut,
    response_model_exclude_none=True,
    responses=NOT_FOUND,
)
async def job_record(
    token: str, store: StoreDep, caller: CallerDep, wait: WaitDep, settings: SettingsDep, request: Request
):
    """The job's record: kind, client, status, timestamps, timings, error, and the input
    URL the client named."""
    return client_record(await waited_job(request, store, token, caller, wait), settings.uploads_url)


@router.get(
    "/tasks/{token}/report",
    response_class=Response,  # not HTMLResponse: FastAPI would document the JSON 404 as text/html too
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The job's performance report"},
        **NOT_FOUND,
    },
)
def job_report(token: str, store: StoreDep, caller: CallerDep, request: Request):
    """The job's performance report: its task stream, its workers' profile and its timing
    record, as one self-contained page (rendered on the first request, then kept)."""
    owned_past_job(store, token, caller)  # a report outlives its record, as the job's listing does
    reports: ReportWriter = request.app.state.reports
    try:
        page = reports.report(token)
    except OSError:  # the reports store refused us: the operator's problem, not the client's
        log.warning("cannot read the report of %s", token, exc_info=True)
        page = None
    if page is None:  # the job has not ended, or its files expired from the store
        raise JobNotFound(token)
    return HTMLResponse(page)
