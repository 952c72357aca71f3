"""The web console (``/ui``): a client's jobs, one job, and the operator's view of the queue.

Pages are server-rendered shells (Jinja2, backend/api/console/) that a small script of
ours fills from the JSON API, with the browser's sign-in cookie (backend.api.session)
standing in for the headers a script would send: every request a page makes goes
through the same routes, owner checks and quotas as curl's. Nothing comes from outside
the API: no CDN, no build step, and a Content-Security-Policy that says so.
"""

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from backend.api import session
from backend.api.auth import identify
from backend.api.deps import StoreDep, get_caller, get_credential, is_operator
from backend.api.lookup import owned_job
from backend.core.exceptions import JobNotFound, NotAuthenticated
from backend.core.job import JobStatus
from backend.core.kinds import KINDS
from backend.core.settings import Settings
from backend.jobs.clients import NAME, ClientSettings

ASSETS = Path(__file__).resolve().parent.parent / "console"
templates = Jinja2Templates(directory=ASSETS)
static = StaticFiles(directory=ASSETS / "static")
# Only what the API itself serves: scripts, styles, images, fetches and event streams;
# and S3, where the page sends a file straight there (a direct upload's presigned PUTs).
POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; connect-src 'self'"
)
# Where presigned URLs point on AWS (virtual-hosted buckets, any region).
AWS_S3 = "https://*.amazonaws.com"

router = APIRouter(prefix="/ui", include_in_schema=False)


class SignIn(BaseModel):
    """What the sign-in form sends: an API key (keys mode) or a client name (open mode)."""

    key: str | None = Field(None, max_length=256)
    client: str | None = Field(None, pattern=f"^{NAME.pattern}$")


@router.get("")
async def jobs_page(request: Request) -> Response:
    """The caller's jobs, its quotas and the upload form; the sign-in form until signed in."""
    caller = await signed_in_caller(request)
    if caller is None or "switch" in request.query_params:
        return page(request, "signin.html", caller)
    statuses = [status.value for status in JobStatus]
    submit_kinds = [
        {"name": kind.name, "media_type": kind.input.media_type, "in_blocks": kind.in_blocks} for kind in KINDS.values()
    ]
    return page(request, "jobs.html", caller, statuses=statuses, kinds=list(KINDS), submit_kinds=submit_kinds)


@router.get("/jobs/{token}")
async def job_page(token: str, request: Request, store: StoreDep) -> Response:
    """One job: its timings, result and report, live while it runs; another client's is a 404."""
    caller = await signed_in_caller(request)
    if caller is None:
        return page(request, "signin.html", None)
    try:
        job = await run_in_threadpool(owned_job, store, token, caller)
    except JobNotFound:
        return page(request, "error.html", caller, status_code=404, message="No job of yours has this token.")
    return page(request, "job.html", caller, job=job, result_kind=KINDS.get(job.kind))


@router.get("/operator")
async def operator_page(request: Request) -> Response:
    """Every client's share of each lane, the dispatchers, the last failures, lead times."""
    caller = await signed_in_caller(request)
    if caller is None:
        return page(request, "signin.html", None)
    if not is_operator(caller, request.app.state.settings):
        return page(request, "error.html", caller, status_code=403, message="This page is for operators.")
    return page(request, "operator.html", caller, dashboard_url=request.app.state.settings.dashboard_url)


@router.post("/session")
async def sign_in(body: SignIn, request: Request) -> Response:
    """Check the key (or name), then keep it in the browser's cookies."""
    session.check_same_origin(request)
    mode = request.app.state.settings.auth
    credential = body.key if mode == "keys" else body.client
    if not credential:
        field = "key" if mode == "keys" else "client"
        return JSONResponse({"error": f"{field}: required to sign in"}, status_code=400)
    caller = await run_in_threadpool(identify, request.app.state.registry, mode, *session.credential(credential, mode))
    response = JSONResponse({"client": caller.name})
    session.start(response, request, credential)
    return response


@router.delete("/session")
async def sign_out(request: Request) -> Response:
    session.check_csrf(request)
    response = Response(status_code=204)
    session.end(response)
    return response


async def signed_in_caller(request: Request) -> ClientSettings | None:
    """The browser's client, found as every route finds its caller (a page request carries
    the cookie, no headers); None when it must sign in (keys mode, with no cookie or a key
    that no longer works). In open mode a browser with no cookie is the client
    ``anonymous``, as curl with no header is."""
    try:
        credential = await get_credential(request)
        return await run_in_threadpool(get_caller, request, credential)
    except NotAuthenticated:
        return None


def page(
    request: Request, template: str, caller: ClientSettings | None, status_code: int = 200, **context
) -> HTMLResponse:
    context |= {
        "status_code": status_code,
        "caller": caller,
        "mode": request.app.state.settings.auth,
        "operator": caller is not None and is_operator(caller, request.app.state.settings),
        "csrf_token": session.csrf_token(request),
    }
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = policy(request.app.state.settings)
    response.headers["Cache-Control"] = "no-store"
    return response


def policy(settings: Settings) -> str:
    if not settings.direct_uploads_offered:
        return POLICY
    endpoint = urlsplit(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
    return f"{POLICY} {f'{endpoint.scheme}://{endpoint.netloc}' if endpoint else AWS_S3}"
