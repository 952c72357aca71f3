"""The routes every job kind gets from its declaration (backend/core/kinds.py):
``POST /<kind>`` for a kind whose input is a small body (file kinds: routes/files.py),
``GET /<kind>/{token}/status`` and ``GET /<kind>/{token}/result``."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend.api.bodies import body_chunks, declared_length, read_rest, read_start, with_start
from backend.api.deps import CallerDep, IdempotencyKeyDep, SettingsDep, StoreDep, SubmitterDep, WaitDep, cooldown
from backend.api.lookup import finished_output, job_status, waited_job
from backend.api.schemas import (
    BAD_INPUT,
    KEY_REUSED,
    NOT_FOUND,
    OVER_QUOTA,
    TOO_LARGE,
    TOO_SLOW,
    Responses,
    StatusOut,
    TokenOut,
    created,
)
from backend.core.job import new_token
from backend.core.kinds import Body, JobKind, load


def status_operation(kind: JobKind) -> str:
    """The operation id of the kind's status route: what its submissions link to."""
    return f"{kind.slug}_status"


def add_door(
    router: APIRouter, kind: JobKind, endpoint: Callable[..., Any], responses: Responses, content: dict
) -> None:
    """``POST /<kind>``: a submission, answered 201 with the job's token; ``content`` is
    the request body's media types and schemas, for the OpenAPI document."""
    router.add_api_route(
        f"/{kind.name}",
        endpoint,
        methods=["POST"],
        name=f"post_{kind.slug}",
        status_code=201,
        response_model=TokenOut,
        responses={**created(status_operation(kind)), **responses},
        openapi_extra={"requestBody": {"required": True, "content": content}},
        summary=kind.summary,
        dependencies=[Depends(cooldown)],
    )


def add_body_door(router: APIRouter, kind: JobKind, body: Body) -> None:
    """``POST /<kind>``: the whole input as the body, capped and checked at the door."""

    async def submit(
        request: Request,
        caller: CallerDep,
        submitter: SubmitterDep,
        settings: SettingsDep,
        key: IdempotencyKeyDep = None,
    ):
        max_bytes = getattr(settings, body.max_bytes_setting)
        # The input is held in Redis or a file: room for it (as long as it says it is, or as
        # the cap when it says nothing) is reserved before the rest is read, so that a
        # client's bodies in the API's memory never pass what it may hold. One kept as a
        # file is written as it arrives: the API holds a chunk of it, not all of it.
        size = declared_length(request, max_bytes) or max_bytes
        token = new_token()
        chunks = body_chunks(request, settings)
        start = await read_start(chunks, body.head_bytes)
        room = kind.output_room(start)  # a start of another shape is refused here (400)
        kind.check_head(start, settings)
        await submitter.reserve_held(caller, token, size, room)
        try:
            if submitter.keeps_as_file(room):  # streamed to its file, checked by its start
                if body.check is not None:
                    load(body.check)(start)
                rest = with_start(start, chunks)
                job = await submitter.streamed_body(caller, kind, rest, max_bytes, room, token, key)
            else:
                data = await read_rest(start, chunks, max_bytes)
                if body.check is not None:
                    load(body.check)(data)
                job = await submitter.body(caller, kind, data, key, token)
        except BaseException:  # refused, cut or disconnected before the job was stored
            await submitter.release_held(caller, token)
            raise
        return TokenOut(token=job.token)

    content = {body.media_type: {"schema": {"type": "string", "format": "binary"}}}
    add_door(router, kind, submit, {**BAD_INPUT, **TOO_SLOW, **TOO_LARGE, **KEY_REUSED, **OVER_QUOTA}, content)


def add_status_and_result(router: APIRouter, kind: JobKind) -> None:
    """``GET /<kind>/{token}/status`` and ``/result``; a token of another kind is a 404."""

    async def status(token: str, store: StoreDep, caller: CallerDep, wait: WaitDep, request: Request):
        return job_status(await waited_job(request, store, token, caller, wait, kind.name))

    async def result(
        token: str, store: StoreDep, settings: SettingsDep, caller: CallerDep, wait: WaitDep, request: Request
    ):
        # The stored bytes are answered as they are: a JSON result's numbers stay exact at any size.
        job = await waited_job(request, store, token, caller, wait, kind.name)
        output = await run_in_threadpool(finished_output, store, job, settings)
        if isinstance(output, bytes):
            return Response(output, media_type=kind.result_media_type)
        return StreamingResponse(output, media_type=kind.result_media_type)

    router.add_api_route(
        f"/{kind.name}/{{token}}/status",
        status,
        methods=["GET"],
        name=status_operation(kind),
        response_model=StatusOut,
        response_model_exclude_none=True,
        responses=NOT_FOUND,
    )
    if kind.result_model is not None:
        shape: dict = {"response_model": kind.result_model, "responses": NOT_FOUND}
    else:
        content = {"content": {kind.result_media_type: {}}, "description": kind.result_description}
        shape = {"responses": {200: content, **NOT_FOUND}, "response_class": Response}
    router.add_api_route(f"/{kind.name}/{{token}}/result", result, methods=["GET"], name=f"{kind.slug}_result", **shape)
