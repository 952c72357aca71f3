"""The HTTP API: thin routes over JobStore. Errors become HTTP only here.

Kept from the original Flask service, byte for byte where clients can see it:
``POST /randomize`` -> 201 {"token"}, 400 {"error"} for a non-PNG body, status and
result routes with {"status"} and {"message": "not found"}.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import fsspec
import redis
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from backend.exceptions import BodyTooSlow, InputTooLarge, JobNotFound, StorageFull, StorageUnavailable
from backend.job import Job, JobStatus, Kind, Progress, new_token
from backend.metrics import RedisMetrics
from backend.settings import Settings, get_settings
from backend.store import JobStore
from backend.uploads import URL_MAX_CHARS, URL_PATTERN, URL_RULES, check_allowed_url, paced, save_stream
from compute.errors import InvalidInput
from compute.image import PNG_SIGNATURE

log = logging.getLogger(__name__)

# -- response models (they are what /openapi.json documents) -----------------------


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


class ErrorOut(BaseModel):
    error: str


class NotFoundOut(BaseModel):
    message: Literal["not found"] = "not found"


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    redis: bool
    dask: bool
    dashboard_url: str


# OpenAPI "responses" entries: status -> what the route documents for it.
Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {404: {"model": NotFoundOut, "description": "Unknown or expired token, or no result yet"}}
BAD_INPUT: Responses = {400: {"model": ErrorOut, "description": "The input is not valid"}}
TOO_LARGE: Responses = {413: {"model": ErrorOut, "description": "The body is over the size limit"}}
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


# An upload's body, as text or as bytes. Zero bytes is a 400; a file of whitespace is a job (its sum is 0).
UPLOAD_TEXT = {"type": "string", "minLength": 1}
UPLOAD_BYTES = {"type": "string", "format": "binary", "minLength": 1}


# -- wiring -----------------------------------------------------------------------------


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[JobStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ClientId = Annotated[str, Header(alias="X-Client-Id", max_length=128)]

router = APIRouter()


# -- the original image job ----------------------------------------------------------------


@router.post(
    "/randomize",
    status_code=201,
    response_model=TokenOut,
    responses={**created("randomize_status_randomize__token__status_get"), **BAD_INPUT, **TOO_SLOW, **TOO_LARGE},
    openapi_extra={
        "requestBody": {"required": True, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
    },
    summary="Submit a PNG whose blocks will be shuffled",
)
async def post_randomize(request: Request, store: StoreDep, settings: SettingsDep, client: ClientId = "anonymous"):
    body = await read_body(request, settings, settings.max_image_bytes)
    if not body.startswith(PNG_SIGNATURE):
        raise InvalidInput("the body is not a PNG image (send Content-Type: image/png and the file's bytes)")
    job = await run_in_threadpool(store.submit, Kind.randomize, client, input_bytes=body)
    return TokenOut(token=job.token)


@router.get(
    "/randomize/{token}/status", response_model=StatusOut, response_model_exclude_none=True, responses=NOT_FOUND
)
def randomize_status(token: str, store: StoreDep):
    return job_status(store, token, Kind.randomize)


@router.get(
    "/randomize/{token}/result",
    responses={200: {"content": {"image/png": {}}, "description": "The shuffled PNG"}, **NOT_FOUND},
    response_class=Response,
)
def randomize_result(token: str, store: StoreDep):
    return Response(finished_output(store, token, Kind.randomize), media_type="image/png")


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
async def post_even_sum(request: Request, store: StoreDep, settings: SettingsDep, client: ClientId = "anonymous"):
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        url = await read_url(request, settings)
        # In a thread: resolving file:// links lstat's each folder of the path.
        url = await run_in_threadpool(check_allowed_url, url, settings.allowed_url_prefixes)
        token = None
    elif content_type.startswith("multipart/"):
        raise InvalidInput("send the file as the raw body (curl -T FILE or --data-binary @FILE), not as a form")
    else:
        token = new_token()
        url = f"{settings.uploads_url}/{token}.txt"
        check_declared_length(request, settings.max_upload_bytes)
        await save_stream(body_chunks(request, settings), url, settings.max_upload_bytes, settings.storage_options(url))
    job = await run_in_threadpool(store.submit, Kind.even_sum, client, input_url=url, token=token)
    return TokenOut(token=job.token)


@router.get("/even-sum/{token}/status", response_model=StatusOut, response_model_exclude_none=True, responses=NOT_FOUND)
def even_sum_status(token: str, store: StoreDep):
    return job_status(store, token, Kind.even_sum)


@router.get("/even-sum/{token}/result", response_model=EvenSumOut, responses=NOT_FOUND)
def even_sum_result(token: str, store: StoreDep):
    # The stored JSON is returned as it is: the sum stays exact at any size.
    return Response(finished_output(store, token, Kind.even_sum), media_type="application/json")


# -- records, reports, health, metrics ------------------------------------------------------


@router.get("/tasks/{token}", response_model=Job, response_model_exclude_none=True, responses=NOT_FOUND)
def task_record(token: str, store: StoreDep):
    """The whole job record: kind, client, status, timestamps, timings, error, input URL."""
    return store.get(token)


@router.get(
    "/tasks/{token}/report",
    response_class=Response,  # not HTMLResponse: FastAPI would document the JSON 404 as text/html too
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The Dask performance report"},
        **NOT_FOUND,
    },
)
def task_report(token: str, store: StoreDep, settings: SettingsDep):
    url = store.get(token).report_url
    if url is None:
        raise JobNotFound(token)
    try:
        with fsspec.open(url, "r", **settings.storage_options(url)) as f:
            return HTMLResponse(f.read())
    except FileNotFoundError:  # still being written, or expired from the store
        raise JobNotFound(token) from None
    except OSError:  # the reports store refused us: the operator's problem, not the client's
        log.warning("cannot read the report of %s at %s", token, url, exc_info=True)
        raise JobNotFound(token) from None


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut, "description": "Redis is down"}})
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


def job_status(store: JobStore, token: str, kind: Kind) -> StatusOut:
    job = job_of_kind(store, token, kind)
    return StatusOut(
        status=job.status,
        error=job.error if job.status is JobStatus.errored else None,
        progress=job.progress if job.status is JobStatus.received else None,
    )


def finished_output(store: JobStore, token: str, kind: Kind) -> bytes:
    job = job_of_kind(store, token, kind)
    output = store.output(token) if job.status is JobStatus.finished else None
    if output is None:
        raise JobNotFound(token)
    return output


def job_of_kind(store: JobStore, token: str, kind: Kind) -> Job:
    """The job, or JobNotFound when the token belongs to another kind of job."""
    job = store.get(token)
    if job.kind != kind:
        raise JobNotFound(token)
    return job


def check_declared_length(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise InputTooLarge(f"body of {declared} bytes is over the limit of {max_bytes} bytes")


def body_chunks(request: Request, settings: Settings) -> AsyncIterator[bytes]:
    """The request's body as it arrives, cut with 408 when the client stalls or drips it."""
    return paced(request.stream(), settings.body_min_bytes_per_s, settings.body_grace_s)


async def read_body(request: Request, settings: Settings, max_bytes: int) -> bytes:
    """The body, refusing to hold more than ``max_bytes`` even when no length was declared."""
    check_declared_length(request, max_bytes)
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


def _error(status: int, body: dict, headers: dict | None = None):
    return lambda request, exc: JSONResponse(body if body else {"error": str(exc)}, status_code=status, headers=headers)


# For errors raised while the body may still be coming: uvicorn closes the connection after
# the answer instead of reading (and throwing away) whatever the client keeps sending.
CLOSE = {"Connection": "close"}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; ``settings`` default to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        app.state.settings = settings
        app.state.store = JobStore(client, settings.result_ttl_s)
        app.state.metrics = CollectorRegistry(auto_describe=False)
        app.state.metrics.register(RedisMetrics(client))
        yield
        client.close()

    app = FastAPI(
        title="SpaceTime Analytics",
        version="0.1.0",
        description="Submit jobs, poll their status, fetch their results. Jobs run on a Dask cluster.",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.add_exception_handler(JobNotFound, _error(404, {"message": "not found"}))
    app.add_exception_handler(InvalidInput, _error(400, {}))
    app.add_exception_handler(InputTooLarge, _error(413, {}, CLOSE))
    app.add_exception_handler(BodyTooSlow, _error(408, {}, CLOSE))
    app.add_exception_handler(StorageUnavailable, _error(503, {}, CLOSE))
    app.add_exception_handler(StorageFull, _error(507, {}, CLOSE))
    app.add_exception_handler(
        redis.RedisError, _error(503, {"error": "the job store (Redis) is unavailable; try again"})
    )
    return app
