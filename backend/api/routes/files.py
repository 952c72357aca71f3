"""The doors of file kinds (even-sum): ``POST /<kind>`` with the file streamed as the
body or ``{"url"}`` naming one, and direct multipart uploads straight to S3 for large
files (``POST /<kind>/uploads``, then ``.../uploads/{upload_id}/complete``)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel

from backend.api.bodies import URL_BODY_MAX_BYTES, body_chunks, declared_length, read_model
from backend.api.deps import CallerDep, IdempotencyKeyDep, SettingsDep, SubmitterDep, cooldown
from backend.api.routes.kinds import add_door, status_operation
from backend.api.schemas import (
    BAD_INPUT,
    KEEP_INPUT,
    KEY_REUSED,
    NO_DIRECT_UPLOAD,
    OVER_QUOTA,
    REPLAYED,
    S3_DOWN,
    STORE_DOWN,
    TOO_LARGE,
    TOO_SLOW,
    UPLOAD_BYTES,
    UPLOAD_ID_PATTERN,
    UPLOAD_TEXT,
    CompleteUploadIn,
    DirectUploadIn,
    DirectUploadOut,
    ErrorOut,
    EvenSumUrlIn,
    PartUrlOut,
    TokenOut,
    created,
    inline_schema,
)
from backend.core.kinds import File, JobKind
from backend.jobs.store import Idempotency
from compute.errors import InvalidInput

URL_EXAMPLE = '{"url": "s3://bucket/key"}'


def json_body(model: type[BaseModel]) -> dict:
    """A required JSON request body of ``model``, as the OpenAPI document writes it."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(model)}}}}


def add_file_doors(router: APIRouter, kind: JobKind, file: File) -> None:
    add_post(router, kind, file)
    add_direct_upload(router, kind)


def add_post(router: APIRouter, kind: JobKind, file: File) -> None:
    """``POST /<kind>``: the file as the raw body (streamed to the uploads store), or JSON naming it."""

    async def submit(
        request: Request,
        caller: CallerDep,
        submitter: SubmitterDep,
        settings: SettingsDep,
        keep_input: Annotated[bool, Query(description=KEEP_INPUT)] = False,
        key: IdempotencyKeyDep = None,
    ):
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            named = await read_model(request, settings, EvenSumUrlIn, URL_BODY_MAX_BYTES, URL_EXAMPLE)
            job = await submitter.url(caller, kind, named.url, key)
        elif content_type.startswith("multipart/"):
            raise InvalidInput("send the file as the raw body (curl -T FILE or --data-binary @FILE), not as a form")
        else:
            declared = declared_length(request, settings.max_upload_bytes)
            job = await submitter.upload(caller, kind, body_chunks(request, settings), declared, keep_input, key)
        return TokenOut(token=job.token)

    content = {
        file.media_type: {"schema": UPLOAD_TEXT},
        "application/octet-stream": {"schema": UPLOAD_BYTES},
        "application/json": {"schema": EvenSumUrlIn.model_json_schema()},
    }
    responses = {**BAD_INPUT, **TOO_SLOW, **TOO_LARGE, **KEY_REUSED, **OVER_QUOTA, **STORE_DOWN}
    add_door(router, kind, submit, responses, content)


def add_direct_upload(router: APIRouter, kind: JobKind) -> None:
    """Start and complete a direct upload; the completed file becomes a job of ``kind``."""

    async def start(
        request: Request,
        caller: CallerDep,
        submitter: SubmitterDep,
        settings: SettingsDep,
        key: IdempotencyKeyDep = None,
    ):
        submitter.require_direct_uploads(kind)
        wanted = await read_model(request, settings, DirectUploadIn)
        asked = Idempotency.of(caller.name, key, b"start", wanted.model_dump_json().encode()) if key else None
        started = await submitter.start_direct_upload(
            caller, kind, wanted.size, wanted.part_size, wanted.keep_input, asked
        )
        upload = started.upload
        parts = [
            PartUrlOut(part_number=n, size=upload.plan.part_size(n), url=url) for n, url in enumerate(started.urls, 1)
        ]
        answer = DirectUploadOut(
            upload_id=upload.upload_id,
            token=upload.token,
            part_size=upload.part_bytes,
            expires_at=upload.expires_at,
            parts=parts,
        )
        return await submitter.remember(caller, asked, answer)

    async def complete(
        upload_id: Annotated[str, Path(pattern=UPLOAD_ID_PATTERN)],
        request: Request,
        caller: CallerDep,
        submitter: SubmitterDep,
        settings: SettingsDep,
    ):
        """The parts are checked against S3's own listing, not the client's word: each one
        uploaded, of its exact size, none extra, each ETag the one S3 holds. Retried after
        it queued the job, it answers the same token (the upload id is its idempotency key)."""
        submitter.require_direct_uploads(kind)
        sent = await read_model(request, settings, CompleteUploadIn)
        etags: dict[int, str] = {}
        for part in sent.parts:
            if part.part_number in etags:
                raise InvalidInput(f"part {part.part_number} is listed twice")
            etags[part.part_number] = part.etag
        job = await submitter.complete_direct_upload(caller, kind, upload_id, etags)
        return TokenOut(token=job.token)

    router.add_api_route(
        f"/{kind.name}/uploads",
        start,
        methods=["POST"],
        name=f"start_{kind.slug}_upload",
        status_code=201,
        response_model=DirectUploadOut,
        responses={
            201: {
                "description": "Started: PUT each part to its URL, then call complete with the ETags",
                "headers": REPLAYED,
            },
            **NO_DIRECT_UPLOAD,
            **BAD_INPUT,
            **TOO_LARGE,
            **KEY_REUSED,
            **OVER_QUOTA,
            **S3_DOWN,
        },
        openapi_extra=json_body(DirectUploadIn),
        summary="Start an upload straight to S3 (large files): presigned URLs, one per part",
        dependencies=[Depends(cooldown)],
        description=(
            "The client PUTs each part to its URL (in parallel if it likes) and then calls\n"
            f"`/{kind.name}/uploads/{{upload_id}}/complete`, which queues the job. Only where the uploads\n"
            f"store is S3; elsewhere a 404 says to send the file as the body of `POST /{kind.name}`."
        ),
    )
    router.add_api_route(
        f"/{kind.name}/uploads/{{upload_id}}/complete",
        complete,
        methods=["POST"],
        name=f"complete_{kind.slug}_upload",
        status_code=201,
        response_model=TokenOut,
        responses={
            **created(status_operation(kind)),
            **NO_DIRECT_UPLOAD,
            400: {
                "model": ErrorOut,
                "description": "The parts are not right: missing, of the wrong size, too many, a wrong ETag",
            },
            409: {"model": ErrorOut, "description": "Another complete call of this upload is running"},
            **OVER_QUOTA,
            **S3_DOWN,
        },
        openapi_extra=json_body(CompleteUploadIn),
        summary=f"Complete an upload straight to S3: check its parts, queue the {kind.name} job",
    )
