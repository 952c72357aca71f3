"""The HTTP API: thin routes over JobStore. Errors become HTTP only here.

Kept from the original Flask service, byte for byte where clients can see it:
``POST /randomize`` -> 201 {"token"}, 400 {"error"} for a non-PNG body, status and
result routes with {"status"} and {"message": "not found"}.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from backend.api.admission import RateLimiter
from backend.api.auth import identify
from backend.api.direct_uploads import S3_MAX_PART_BYTES, S3_MAX_PARTS, S3_MIN_PART_BYTES, DirectUploads
from backend.api.endings import Endings
from backend.api.submission import Submitter
from backend.api.uploads import URL_MAX_CHARS, URL_PATTERN, URL_RULES, paced, sweep_partial_uploads
from backend.core.exceptions import (
    BodyTooSlow,
    DirectUploadsUnavailable,
    InputTooLarge,
    JobNotFound,
    NotAuthenticated,
    OverQuota,
    StorageFull,
    StorageUnavailable,
    UploadBusy,
    UploadNotFound,
)
from backend.core.job import Job, JobStatus, Kind, Progress
from backend.core.settings import Settings, get_settings
from backend.jobs.clients import NAME, ClientRegistry, ClientSettings
from backend.jobs.store import JobStore
from backend.telemetry.metrics import RedisMetrics
from backend.telemetry.reports import ReportWriter
from compute.errors import InvalidInput
from compute.png import PNG_SIGNATURE

log = logging.getLogger(__name__)

# -- response models (they are what /openapi.json documents) -----------------------

# An S3 ETag is a quoted MD5 (a multipart one adds "-N"); anything much longer is not one.
ETAG_MAX_CHARS = 128
UPLOAD_ID_PATTERN = "^[0-9a-f]{32}$"


class TokenOut(BaseModel):
    token: str


class StatusOut(BaseModel):
    status: JobStatus
    error: str | None = None
    progress: Progress | None = None


class EvenSumOut(BaseModel):
    sum: int
    even_count: int
    count: int
    bytes: int


class EvenSumUrlIn(BaseModel):
    # Declared here for clients and fuzzers; check_allowed_url enforces the same rules with clearer messages.
    url: str = Field(description=URL_RULES, json_schema_extra={"pattern": URL_PATTERN, "maxLength": URL_MAX_CHARS})


class DirectUploadIn(BaseModel):
    size: int = Field(gt=0, description="The file's size in bytes (at most the server's upload limit)")
    part_size: int | None = Field(
        None,
        ge=S3_MIN_PART_BYTES,
        le=S3_MAX_PART_BYTES,
        description="Bytes per part (the last part is shorter); by default the server's choice",
    )


class PartUrlOut(BaseModel):
    part_number: int
    size: int = Field(description="The part's exact size in bytes")
    url: str = Field(description="PUT the part's bytes here (no other header needed); S3 answers with its ETag")


class DirectUploadOut(BaseModel):
    upload_id: str
    part_size: int
    expires_at: float = Field(description="Epoch seconds: complete the upload before then; the URLs expire then too")
    parts: list[PartUrlOut]


class PartIn(BaseModel):
    part_number: int = Field(ge=1, le=S3_MAX_PARTS)
    etag: str = Field(min_length=1, max_length=ETAG_MAX_CHARS, description="The ETag header S3 answered the PUT with")


class CompleteUploadIn(BaseModel):
    parts: list[PartIn] = Field(min_length=1, max_length=S3_MAX_PARTS)


class ErrorOut(BaseModel):
    error: str


class NotFoundOut(BaseModel):
    message: Literal["not found"] = "not found"


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    redis: bool
    dask: bool
    dashboard_url: str


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models written in place: a request body
    documented by hand (openapi_extra) cannot point at pydantic's local $defs."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


# OpenAPI "responses" entries: status -> what the route documents for it.
Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {404: {"model": NotFoundOut, "description": "Unknown or expired token, or no result yet"}}
BAD_INPUT: Responses = {400: {"model": ErrorOut, "description": "The input is not valid"}}
TOO_LARGE: Responses = {413: {"model": ErrorOut, "description": "The body is over the size limit or the quota"}}
NOT_AUTHENTICATED: Responses = {
    401: {"model": ErrorOut, "description": "No valid API key (keys mode)"},
    400: {"model": ErrorOut, "description": "A header or parameter is not valid (e.g. X-Client-Id)"},
}
OVER_QUOTA: Responses = {
    429: {
        "model": ErrorOut,
        "description": "Over the client's rate or backlog quota",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    }
}
TOO_SLOW: Responses = {408: {"model": ErrorOut, "description": "The body stalled, or came slower than the floor"}}
STORE_DOWN: Responses = {
    503: {"model": ErrorOut, "description": "The job store (Redis) or the uploads store cannot be written; try again"},
    507: {"model": ErrorOut, "description": "The uploads store is full; try again later"},
}


def created(status_operation: str) -> Responses:
    """The 201 of a submission, with OpenAPI links saying where its token goes next.

    Only to routes that answer 200 right away: the result and the report are 404 until
    the job is done. Fuzzers (schemathesis' stateful phase) follow these links too.
    """
    token = {"token": "$response.body#/token"}
    links = {
        "status": {"operationId": status_operation, "parameters": token},
        "record": {"operationId": "task_record_tasks__token__get", "parameters": token},
    }
    return {201: {"description": "Accepted: the job's token", "links": links}}


S3_DOWN: Responses = {
    503: {"model": ErrorOut, "description": "The job store (Redis) or S3 cannot be reached; try again"}
}
NO_DIRECT_UPLOAD: Responses = {
    404: {
        "model": ErrorOut,
        "description": "No such pending upload (unknown, completed, expired or another client's), or this server "
        "offers no direct uploads (its uploads store is a local folder): stream the body to POST /even-sum instead",
    }
}

# An upload's body, as text or as bytes. Zero bytes is a 400; a file of whitespace is a job (its sum is 0).
UPLOAD_TEXT = {"type": "string", "minLength": 1}
UPLOAD_BYTES = {"type": "string", "format": "binary", "minLength": 1}


# -- wiring -----------------------------------------------------------------------------


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_submitter(request: Request) -> Submitter:
    return request.app.state.submitter


# In keys mode, `Authorization: Bearer <key>`; in open mode optional (and ignored).
BEARER = HTTPBearer(auto_error=False, description="An API key from `spacetime clients add` (keys mode)")


def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    x_client_id: Annotated[str | None, Header(alias="X-Client-Id", pattern=f"^{NAME.pattern}$")] = None,
) -> ClientSettings:
    """The client the request comes from (backend.api.auth), with its settings."""
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    return identify(request.app.state.registry, request.app.state.settings.auth, authorization, x_client_id)


StoreDep = Annotated[JobStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SubmitterDep = Annotated[Submitter, Depends(get_submitter)]
CallerDep = Annotated[ClientSettings, Depends(get_caller)]

WAIT_TEXT = (
    "Seconds to wait for the job to end: the answer comes as soon as it is `finished` or `errored`, "
    "or after this long, with what there is then (a result: 404 unless `finished`). 0 (the default) "
    "answers at once. At most the server's "
    "`SPACETIME_MAX_STATUS_WAIT_S` (the maximum here); over it, or not a number: 400."
)


async def get_wait(  # async: a sync dependency would cost every status request a thread hop
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, allow_inf_nan=False, description=WAIT_TEXT)] = 0.0,
) -> float:
    """The ``wait`` of a status request, in seconds; InvalidInput (400) past the server's cap."""
    if wait > settings.max_status_wait_s:
        raise InvalidInput(f"query.wait: at most {settings.max_status_wait_s:g} seconds on this server, not {wait:g}")
    return wait


WaitDep = Annotated[float, Depends(get_wait)]

router = APIRouter(responses={**NOT_AUTHENTICATED})


# -- the original image job ----------------------------------------------------------------


@router.post(
    "/randomize",
    status_code=201,
    response_model=TokenOut,
    responses={
        **created("randomize_status_randomize__token__status_get"),
        **BAD_INPUT,
        **TOO_SLOW,
        **TOO_LARGE,
        **OVER_QUOTA,
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
    },
    summary="Submit a PNG whose blocks will be shuffled",
)
async def post_randomize(request: Request, caller: CallerDep, submitter: SubmitterDep, settings: SettingsDep):
    body = await read_body(request, settings, settings.max_image_bytes)
    if not body.startswith(PNG_SIGNATURE):
        raise InvalidInput("the body is not a PNG image (send Content-Type: image/png and the file's bytes)")
    job = await submitter.image(caller, body)
    return TokenOut(token=job.token)


@router.get(
    "/randomize/{token}/status", response_model=StatusOut, response_model_exclude_none=True, responses=NOT_FOUND
)
async def randomize_status(token: str, store: StoreDep, caller: CallerDep, wait: WaitDep, request: Request):
    return job_status(await waited_job(request, store, token, caller, wait, Kind.randomize))


@router.get(
    "/randomize/{token}/result",
    responses={200: {"content": {"image/png": {}}, "description": "The shuffled PNG"}, **NOT_FOUND},
    response_class=Response,
)
async def randomize_result(token: str, store: StoreDep, caller: CallerDep, wait: WaitDep, request: Request):
    job = await waited_job(request, store, token, caller, wait, Kind.randomize)
    return Response(await run_in_threadpool(finished_output, store, job), media_type="image/png")


# -- even sum --------------------------------------------------------------------------------


@router.post(
    "/even-sum",
    status_code=201,
    response_model=TokenOut,
    responses={
        **created("even_sum_status_even_sum__token__status_get"),
        **BAD_INPUT,
        **TOO_SLOW,
        **TOO_LARGE,
        **OVER_QUOTA,
        **STORE_DOWN,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/plain": {"schema": UPLOAD_TEXT},
                "application/octet-stream": {"schema": UPLOAD_BYTES},
                "application/json": {"schema": EvenSumUrlIn.model_json_schema()},
            },
        }
    },
    summary="Sum the even integers of a text file: upload it, or name it by URL",
)
async def post_even_sum(request: Request, caller: CallerDep, submitter: SubmitterDep, settings: SettingsDep):
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        job = await submitter.url(caller, await read_url(request, settings))
    elif content_type.startswith("multipart/"):
        raise InvalidInput("send the file as the raw body (curl -T FILE or --data-binary @FILE), not as a form")
    else:
        declared = declared_length(request, settings.max_upload_bytes)
        job = await submitter.upload(caller, body_chunks(request, settings), declared)
    return TokenOut(token=job.token)


@router.post(
    "/even-sum/uploads",
    status_code=201,
    response_model=DirectUploadOut,
    responses={
        201: {"description": "Started: PUT each part to its URL, then call complete with the ETags"},
        **NO_DIRECT_UPLOAD,
        **BAD_INPUT,
        **TOO_LARGE,
        **OVER_QUOTA,
        **S3_DOWN,
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(DirectUploadIn)}}}
    },
    summary="Start an upload straight to S3 (large files): presigned URLs, one per part",
)
async def start_direct_upload(request: Request, caller: CallerDep, submitter: SubmitterDep, settings: SettingsDep):
    """The client PUTs each part to its URL (in parallel if it likes) and then calls
    `/even-sum/uploads/{upload_id}/complete`, which queues the job. Only where the uploads
    store is S3; elsewhere a 404 says to send the file as the body of `POST /even-sum`."""
    submitter.require_direct_uploads()
    wanted = await read_model(request, settings, DirectUploadIn)
    started = await submitter.start_direct_upload(caller, wanted.size, wanted.part_size)
    upload = started.upload
    parts = [PartUrlOut(part_number=n, size=upload.plan.part_size(n), url=url) for n, url in enumerate(started.urls, 1)]
    return DirectUploadOut(
        upload_id=upload.upload_id, part_size=upload.part_bytes, expires_at=upload.expires_at, parts=parts
    )


@router.post(
    "/even-sum/uploads/{upload_id}/complete",
    status_code=201,
    response_model=TokenOut,
    responses={
        **created("even_sum_status_even_sum__token__status_get"),
        **NO_DIRECT_UPLOAD,
        400: {
            "model": ErrorOut,
            "description": "The parts are not right: missing, of the wrong size, too many, a wrong ETag",
        },
        409: {"model": ErrorOut, "description": "Another complete call of this upload is running"},
        **OVER_QUOTA,
        **S3_DOWN,
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(CompleteUploadIn)}}}
    },
    summary="Complete an upload straight to S3: check its parts, queue the even-sum job",
)
async def complete_direct_upload(
    upload_id: Annotated[str, Path(pattern=UPLOAD_ID_PATTERN)],
    request: Request,
    caller: CallerDep,
    submitter: SubmitterDep,
    settings: SettingsDep,
):
    """The parts are checked against S3's own listing, not the client's word: each one
    uploaded, of its exact size, none extra, each ETag the one S3 holds."""
    submitter.require_direct_uploads()
    sent = await read_model(request, settings, CompleteUploadIn)
    etags: dict[int, str] = {}
    for part in sent.parts:
        if part.part_number in etags:
            raise InvalidInput(f"part {part.part_number} is listed twice")
        etags[part.part_number] = part.etag
    job = await submitter.complete_direct_upload(caller, upload_id, etags)
    return TokenOut(token=job.token)


@router.get("/even-sum/{token}/status", response_model=StatusOut, response_model_exclude_none=True, responses=NOT_FOUND)
async def even_sum_status(token: str, store: StoreDep, caller: CallerDep, wait: WaitDep, request: Request):
    return job_status(await waited_job(request, store, token, caller, wait, Kind.even_sum))


@router.get("/even-sum/{token}/result", response_model=EvenSumOut, responses=NOT_FOUND)
async def even_sum_result(token: str, store: StoreDep, caller: CallerDep, wait: WaitDep, request: Request):
    # The stored JSON is returned as it is: the sum stays exact at any size.
    job = await waited_job(request, store, token, caller, wait, Kind.even_sum)
    return Response(await run_in_threadpool(finished_output, store, job), media_type="application/json")


# -- records, reports, health, metrics ------------------------------------------------------


@router.get("/tasks/{token}", response_model=Job, response_model_exclude_none=True, responses=NOT_FOUND)
async def task_record(token: str, store: StoreDep, caller: CallerDep, wait: WaitDep, request: Request):
    """The whole job record: kind, client, status, timestamps, timings, error, input URL."""
    return await waited_job(request, store, token, caller, wait)


@router.get(
    "/tasks/{token}/report",
    response_class=Response,  # not HTMLResponse: FastAPI would document the JSON 404 as text/html too
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The job's performance report"},
        **NOT_FOUND,
    },
)
def task_report(token: str, store: StoreDep, caller: CallerDep, request: Request):
    """The job's performance report: its task stream, its workers' profile and its timing
    record, as one self-contained page (rendered on the first request, then kept)."""
    owned_job(store, token, caller)
    reports: ReportWriter = request.app.state.reports
    try:
        page = reports.report(token)
    except OSError:  # the reports store refused us: the operator's problem, not the client's
        log.warning("cannot read the report of %s", token, exc_info=True)
        page = None
    if page is None:  # the job has not ended, or its files expired from the store
        raise JobNotFound(token)
    return HTMLResponse(page)


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "Redis is down"}},
)
async def healthz(store: StoreDep, settings: SettingsDep):
    redis_ok, dask_ok = await asyncio.gather(
        run_in_threadpool(redis_reachable, store), tcp_reachable(settings.dask_scheduler_address)
    )
    body = HealthOut(
        status="ok" if redis_ok and dask_ok else "degraded",
        redis=redis_ok,
        dask=dask_ok,
        dashboard_url=settings.dashboard_url,
    )
    return JSONResponse(body.model_dump(), status_code=200 if redis_ok else 503)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(request: Request):
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/", summary="Where to go from here")
def index(settings: SettingsDep):
    return {
        "name": "SpaceTime Analytics",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "dashboard_url": settings.dashboard_url,
    }


# -- helpers the routes share -----------------------------------------------------------------


def owned_job(store: JobStore, token: str, caller: ClientSettings, kind: Kind | None = None) -> Job:
    """The job, if the caller may see it; JobNotFound (exactly as for a token that never
    existed) for a token of another kind or, in keys mode, of another client.

    In open mode names are not proven, so a token (128 random bits) is what grants access:
    a report link opened in a browser, which sends no X-Client-Id, still works."""
    job = store.get(token)
    if (kind is not None and job.kind != kind) or (caller.authenticated and job.client != caller.name):
        raise JobNotFound(token)
    return job


async def waited_job(
    request: Request, store: JobStore, token: str, caller: ClientSettings, wait_s: float, kind: Kind | None = None
) -> Job:
    """owned_job, read when the job is final or ``wait_s`` has passed (backend/api/endings.py).

    Store calls are blocking: they run in the threadpool, as in a sync route. Ownership is
    checked by the first read, before any wait: another client's token is a 404 at once."""

    async def read() -> Job:
        return await run_in_threadpool(owned_job, store, token, caller, kind)

    if wait_s <= 0:
        return await read()
    endings: Endings = request.app.state.endings
    return await endings.read_when_final(token, read, wait_s, gone=partial(client_gone, request))


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


def finished_output(store: JobStore, job: Job) -> bytes:
    output = store.output(job.token) if job.status is JobStatus.finished else None
    if output is None:
        raise JobNotFound(job.token)
    return output


def declared_length(request: Request, max_bytes: int) -> int | None:
    """The body's declared length (None if it is streamed without one); InputTooLarge past ``max_bytes``."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return None
    if int(declared) > max_bytes:
        raise InputTooLarge(f"body of {declared} bytes is over the limit of {max_bytes} bytes")
    return int(declared)


def body_chunks(request: Request, settings: Settings) -> AsyncIterator[bytes]:
    """The request's body as it arrives, cut with 408 when the client stalls or drips it."""
    return paced(request.stream(), settings.body_min_bytes_per_s, settings.body_grace_s)


async def read_body(request: Request, settings: Settings, max_bytes: int) -> bytes:
    """The body, refusing to hold more than ``max_bytes`` even when no length was declared."""
    declared_length(request, max_bytes)
    body = bytearray()
    async for chunk in body_chunks(request, settings):
        body += chunk
        if len(body) > max_bytes:
            raise InputTooLarge(f"body is over the limit of {max_bytes} bytes")
    return bytes(body)


async def read_url(request: Request, settings: Settings) -> str:
    try:
        return EvenSumUrlIn.model_validate_json(await read_body(request, settings, URL_BODY_MAX_BYTES)).url
    except ValidationError:
        raise InvalidInput('expected a JSON body like {"url": "s3://bucket/key"}') from None


M = TypeVar("M", bound=BaseModel)


async def read_model(request: Request, settings: Settings, model: type[M]) -> M:
    """A small JSON body as ``model``; InvalidInput saying what is wrong with it."""
    try:
        return model.model_validate_json(await read_body(request, settings, JSON_BODY_MAX_BYTES))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"the JSON body is not right: {problems}") from None


def redis_reachable(store: JobStore) -> bool:
    try:
        return bool(store.redis.ping())
    except redis.RedisError:
        return False


async def tcp_reachable(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``tcp://host:port``."""
    parts = urlsplit(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout_s)
    except (TimeoutError, OSError, ValueError):
        return False
    writer.close()
    return True


URL_BODY_MAX_BYTES = 64 * 1024
# The largest JSON body of the direct-upload routes: 10,000 parts' ETags are ~700 KB.
JSON_BODY_MAX_BYTES = 1024 * 1024


# For errors raised while the body may still be coming: uvicorn closes the connection after
# the answer instead of reading (and throwing away) whatever the client keeps sending.
CLOSE = {"Connection": "close"}


def _error(status: int, body: dict | None = None, headers: Callable[[Any], dict[str, str]] | None = None):
    """An exception handler answering ``status`` with ``body`` (default {"error": message})."""

    def handle(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(body or {"error": str(exc)}, status_code=status, headers=headers(exc) if headers else None)

    return handle


def sweep_uploads(settings: Settings, direct: DirectUploads | None) -> None:
    """Best effort: a store we cannot sweep now is swept at the next start.

    Direct uploads first: those expired are aborted, and those pending (which clients may
    fill for hours) are kept from the sweep of uploads cut off by a crash. If Redis cannot
    say which are pending, the store is not swept at all rather than swept blind."""
    try:
        keep: set[str] = set()
        if direct is not None:
            direct.sweep_expired()
            keep = direct.live_s3_upload_ids()
        if removed := sweep_partial_uploads(
            settings.uploads_url, settings.storage_options(settings.uploads_url), settings.upload_stale_s, keep
        ):
            log.warning("removed %d upload(s) cut off by an earlier crash", removed)
    except Exception as exc:  # never a reason not to start: the next start sweeps again
        log.warning("could not sweep the uploads store %s: %s", settings.uploads_url, exc)


async def sweep_direct_uploads(direct: DirectUploads, every_s: float) -> None:
    """Abort direct uploads abandoned past their expiry, every ``every_s``, for the API's life.
    Every API process sweeps; the expire script lets exactly one of them take each upload."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await run_in_threadpool(direct.sweep_expired)
        except Exception as exc:  # Redis or S3 down for now: the next round tries again
            log.warning("could not sweep expired direct uploads: %s", exc)


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors (a header, a path parameter) in our {"error"} shape."""
    problems = exc.errors() if isinstance(exc, RequestValidationError) else []
    text = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in problems) or str(exc)
    return JSONResponse({"error": text}, status_code=400)


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's document, saying what the API key is in this mode (required in keys mode,
    optional: ``{}``, no security, is an alternative, in open mode) and the longest
    ``wait`` this server takes (a setting, so not in the route's declaration)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                if settings.auth == "open" and "security" in operation:
                    operation["security"] = [{}, *operation["security"]]
                for parameter in operation.get("parameters", []):
                    if (parameter["in"], parameter["name"]) == ("query", "wait"):
                        parameter["schema"]["maximum"] = settings.max_status_wait_s
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; ``settings`` default to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        store = JobStore(client, settings.result_ttl_s)
        app.state.settings = settings
        app.state.store = store
        app.state.registry = ClientRegistry(client, settings)
        submitter = Submitter(settings, store, RateLimiter(client.connection_pool))
        app.state.submitter = submitter
        app.state.reports = ReportWriter(settings)
        app.state.metrics = CollectorRegistry(auto_describe=False)
        app.state.metrics.register(RedisMetrics(client))
        endings = Endings(settings.redis_url, settings.max_status_waiters)
        app.state.endings = endings
        waiters = Gauge(
            "spacetime_status_waiters",
            "Status requests of this API process waiting for their job to end (?wait=)",
            registry=app.state.metrics,
        )
        waiters.set_function(lambda: endings.waiting)
        endings.start()
        await run_in_threadpool(sweep_uploads, settings, submitter.direct)
        sweeper = None
        if submitter.direct is not None:
            sweeper = asyncio.create_task(sweep_direct_uploads(submitter.direct, settings.direct_upload_sweep_s))
        yield
        if sweeper is not None:
            sweeper.cancel()
        await endings.stop()
        client.close()

    # Swagger UI and ReDoc from the fastapi-offline package: /docs works with no internet.
    app = FastAPIOffline(
        title="SpaceTime Analytics",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.include_router(router)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    app.add_exception_handler(JobNotFound, _error(404, {"message": "not found"}))
    app.add_exception_handler(UploadNotFound, _error(404))
    app.add_exception_handler(DirectUploadsUnavailable, _error(404, headers=lambda exc: CLOSE))
    app.add_exception_handler(UploadBusy, _error(409))
    app.add_exception_handler(InvalidInput, _error(400))
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(NotAuthenticated, _error(401, headers=lambda exc: {"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(InputTooLarge, _error(413, headers=lambda exc: CLOSE))
    app.add_exception_handler(BodyTooSlow, _error(408, headers=lambda exc: CLOSE))
    app.add_exception_handler(StorageUnavailable, _error(503, headers=lambda exc: CLOSE))
    app.add_exception_handler(StorageFull, _error(507, headers=lambda exc: CLOSE))
    app.add_exception_handler(OverQuota, _error(429, headers=lambda exc: {"Retry-After": str(exc.retry_after_s or 1)}))
    app.add_exception_handler(
        redis.RedisError, _error(503, {"error": "the job store (Redis) is unavailable; try again"})
    )
    return app


DESCRIPTION = """Submit jobs, poll their status, fetch their results. Jobs run on a Dask cluster.

Instead of polling, ask `GET /randomize/{token}/status?wait=30` (the same on every status
route and on `GET /tasks/{token}`): the answer comes as soon as the job ends, or after 30 s
with the status then. A result route waits the same way (`GET /randomize/{token}/result?wait=30`):
the result, or a 404 if the job did not finish.

Who you are: in `open` mode (the local default) the `X-Client-Id` header names you (no
header: `anonymous`); in `keys` mode send `Authorization: Bearer <key>` (a key from
`spacetime clients add`), and another client's token is a 404 on every route.
Over your rate or backlog quota: 429 with `Retry-After`.
"""
