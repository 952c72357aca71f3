"""What the API's requests and answers look like: the models and the documented
responses that /openapi.json is made of, and the one rule for operation ids."""

from typing import Any, Literal

from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from backend.api.direct_uploads import S3_MAX_PART_BYTES, S3_MAX_PARTS, S3_MIN_PART_BYTES
from backend.api.uploads import URL_MAX_CHARS, URL_PATTERN, URL_RULES
from backend.core.job import JobStatus, Lane, Progress

# An S3 ETag is a quoted MD5 (a multipart one adds "-N"); anything much longer is not one.
ETAG_MAX_CHARS = 128
UPLOAD_ID_PATTERN = "^[0-9a-f]{32}$"
KEEP_INPUT = (
    "Keep the uploaded file in the uploads store after the job ends (deleted by default when "
    "it ends; files named by URL are never deleted)"
)


class TokenOut(BaseModel):
    token: str


class StatusOut(BaseModel):
    status: JobStatus
    error: str | None = None
    progress: Progress | None = None


class JobOut(BaseModel):
    """A job's record as its client sees it (``GET /tasks/{token}``): the Redis record
    (backend/core/job.py) without what is the service's own (its dispatcher, the reports
    store's paths, the path of an upload, why an attempt was lost)."""

    token: str
    kind: str
    status: JobStatus
    client: str
    lane: Lane | None = None
    cost: int = Field(description="Its cost in the fair queue: its number of blocks (an image job is 1)")
    requested_at: float | None = None
    received_at: float | None = None
    finished_at: float | None = None
    attempts: int = Field(description="How many times a dispatcher took it (more than 1: it was retried)")
    input_url: str | None = Field(None, description="The input URL the client named (absent for an upload)")
    progress: Progress | None = None
    error: str | None = None
    cancelled: bool | None = Field(None, description="True when its client cancelled it (it ended `errored`)")
    queue_wait_s: float | None = None
    exec_s: float | None = None
    lead_s: float | None = None
    task_compute_s: float | None = None
    bytes: int | None = None
    report_url: str | None = Field(None, description="The job's performance report, once it has ended")


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
    keep_input: bool = Field(False, description=KEEP_INPUT)


class PartUrlOut(BaseModel):
    part_number: int
    size: int = Field(description="The part's exact size in bytes")
    url: str = Field(description="PUT the part's bytes here (no other header needed); S3 answers with its ETag")


class DirectUploadOut(BaseModel):
    upload_id: str
    token: str = Field(description="The job's token, from now on: the job exists once the upload is completed")
    part_size: int
    expires_at: float = Field(description="Epoch seconds: complete the upload before then; the URLs expire then too")
    parts: list[PartUrlOut]


class PartIn(BaseModel):
    part_number: int = Field(ge=1, le=S3_MAX_PARTS)
    etag: str = Field(min_length=1, max_length=ETAG_MAX_CHARS, description="The ETag header S3 answered the PUT with")


class CompleteUploadIn(BaseModel):
    parts: list[PartIn] = Field(min_length=1, max_length=S3_MAX_PARTS)


class JobLinks(BaseModel):
    record: str = Field(description="GET it for the whole record (while it lives: the result TTL)")
    result: str | None = Field(None, description="GET it for the result, once `finished`")
    report: str = Field(description="GET it for the performance report, once the job has ended")


class JobEntry(BaseModel):
    """One job in a list: what it is now, from its record, or from its summary once the
    record has expired (then without progress)."""

    token: str
    kind: str
    status: JobStatus
    requested_at: float | None = None
    received_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    error: str | None = None
    cancelled: bool | None = None
    queue_position: int | None = Field(None, description="While `requested`: jobs of yours ahead of it in its queue")
    queue_wait_s: float | None = None
    exec_s: float | None = None
    lead_s: float | None = None
    links: JobLinks


class JobPageOut(BaseModel):
    jobs: list[JobEntry] = Field(description="Newest first")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; absent on the last")


class ErrorOut(BaseModel):
    error: str


class NotFoundOut(BaseModel):
    message: Literal["not found"] = "not found"


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    redis: bool
    dask: bool
    dashboard_url: str


class LiveOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "unavailable"]
    redis: bool


class QuotaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str = Field(description="rate, backlog_bytes, running_bulk, running_interactive, held_bytes, uploads...")
    label: str = Field(description="What it bounds, for people")
    used: int = Field(description="What the client takes now")
    limit: int | None = Field(description="Its bound; null: no limit")
    unit: str


class AccountOut(BaseModel):
    """The calling client, and its usage against each of its bounds."""

    model_config = ConfigDict(from_attributes=True)

    client: str
    admin: bool = Field(description="Whether it may read GET /overview (every caller in open mode)")
    mode: Literal["open", "keys"] = Field(description="How the server tells clients apart (SPACETIME_AUTH)")
    quotas: list[QuotaOut]


class LaneClientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client: str
    weight: int
    queued: int = Field(description="Jobs waiting in its queue of the lane")
    running: int = Field(description="Jobs of the lane held by dispatchers")
    block_seconds: float = Field(description="Seconds its tasks computed in the lane within the window")
    share: float = Field(description="Its block-seconds over the lane's, 0 to 1 (0 when nobody computed)")


class LaneOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    lane: Lane
    clients: list[LaneClientOut]


class DispatcherOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    alive: bool = Field(description="Its lease is current; a dead one's jobs go back to their queues")
    heartbeat_age_s: float
    jobs_held: int = Field(description="Jobs in its processing list")


class FailureOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    token: str
    client: str | None
    kind: str | None
    error: str | None = Field(description="The error its client reads")
    ended_at: float | None = Field(description="Epoch seconds")


class LeadTimesOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client: str
    jobs: int = Field(description="Its jobs that finished in the last hour")
    p50_s: float
    p90_s: float
    p99_s: float


class OverviewOut(BaseModel):
    """The operator's view of the whole service."""

    model_config = ConfigDict(from_attributes=True)

    window_s: int = Field(description="The window of block_seconds and share")
    lanes: list[LaneOut]
    dispatchers: list[DispatcherOut]
    dashboard_url: str
    failures: list[FailureOut] = Field(description="The last errored jobs, newest first (cancelled ones left out)")
    lead_times: list[LeadTimesOut] = Field(description="Per client, of its jobs finished in the last hour")


def operation_id(route: APIRoute) -> str:
    """Every route's operation id is its name (the function's, or the one given to a
    route built per kind): short, stable, and what OpenAPI links point at."""
    return route.name


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
KEY_REUSED: Responses = {
    422: {"model": ErrorOut, "description": "The Idempotency-Key was used before for a different request"}
}
OVER_QUOTA: Responses = {
    429: {
        "model": ErrorOut,
        "description": "Over the client's rate or backlog quota",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    }
}
FORBIDDEN: Responses = {403: {"model": ErrorOut, "description": "Not an operator (keys mode: a key without --admin)"}}
ALREADY_ENDED: Responses = {409: {"model": ErrorOut, "description": "The job had ended on its own: nothing to cancel"}}
TOO_SLOW: Responses = {408: {"model": ErrorOut, "description": "The body stalled, or came slower than the floor"}}
STORE_DOWN: Responses = {
    503: {"model": ErrorOut, "description": "The job store (Redis) or the uploads store cannot be written; try again"},
    507: {"model": ErrorOut, "description": "The uploads store is full; try again later"},
}
S3_DOWN: Responses = {
    503: {"model": ErrorOut, "description": "The job store (Redis) or S3 cannot be reached; try again"}
}
NO_DIRECT_UPLOAD: Responses = {
    404: {
        "model": ErrorOut,
        "description": "No such pending upload (unknown, completed, expired or another client's), or this server "
        "offers no direct uploads (its uploads store is a local folder): stream the file as the body of the kind's "
        "POST instead",
    }
}

# The record route's operation id, which every submission's 201 links to.
RECORD_OPERATION = "job_record"


# The header of a 201 that answers a retry.
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` on the answer to a retry (an Idempotency-Key seen before)",
        "schema": {"type": "string"},
    }
}


def created(status_operation: str) -> Responses:
    """The 201 of a submission, with OpenAPI links saying where its token goes next.

    Only to routes that answer 200 right away: the result and the report are 404 until
    the job is done. Fuzzers (schemathesis' stateful phase) follow these links too.
    """
    token = {"token": "$response.body#/token"}
    links = {
        "status": {"operationId": status_operation, "parameters": token},
        "record": {"operationId": RECORD_OPERATION, "parameters": token},
    }
    return {201: {"description": "Accepted: the job's token", "links": links, "headers": REPLAYED}}


# An upload's body, as text or as bytes. Zero bytes is a 400; a file of whitespace is a job (its sum is 0).
UPLOAD_TEXT = {"type": "string", "minLength": 1}
UPLOAD_BYTES = {"type": "string", "format": "binary", "minLength": 1}
