"""Domain errors to HTTP answers: the one place where exceptions become status codes."""

from collections.abc import Callable
from typing import Any, cast

import redis
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from backend.core.exceptions import (
    BodyTooSlow,
    DirectUploadsUnavailable,
    Forbidden,
    IdempotencyKeyReused,
    InputGone,
    InputTooLarge,
    JobEnded,
    JobNotFound,
    NotAuthenticated,
    NotReplicated,
    OverQuota,
    Replayed,
    StorageFull,
    StorageUnavailable,
    UploadBusy,
    UploadNotFound,
    problems,
)
from compute.errors import InvalidInput

# For errors raised while the body may still be coming: uvicorn closes the connection after
# the answer instead of reading (and throwing away) whatever the client keeps sending.
CLOSE = {"Connection": "close"}


def answer(status: int, body: dict | None = None, headers: Callable[[Any], dict[str, str]] | None = None):
    """An exception handler answering ``status`` with ``body`` (default {"error": message}).
    Handlers are async: Starlette runs a sync one in the thread pool, a hop that cost a
    third of the CPU of a refused request."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(body or {"error": str(exc)}, status_code=status, headers=headers(exc) if headers else None)

    return handle


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors (a header, a path parameter) in our {"error"} shape."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"error": problems(list(errors), "") or str(exc)}, status_code=400)


async def replayed(request: Request, exc: Exception) -> JSONResponse:
    """A retried submission: the first request's answer, said to be a replay."""
    answer = exc.answer if isinstance(exc, Replayed) else {}
    return JSONResponse(answer, status_code=201, headers={"Idempotent-Replayed": "true"})


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """A 405 whose Allow lists every method of the path: where two routes serve one path
    (GET and DELETE /tasks/{token}), Starlette's names only the first route's."""
    if not isinstance(exc, StarletteHTTPException) or exc.status_code != 405:
        return await http_exception_handler(request, cast(StarletteHTTPException, exc))
    methods = {
        method
        for route in request.app.routes
        if isinstance(route, Route) and route.methods and route.path_regex.match(request.url.path)
        for method in route.methods
    }
    return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": ", ".join(sorted(methods))})


def add_handlers(app: FastAPI) -> None:
    app.add_exception_handler(JobNotFound, answer(404, {"message": "not found"}))
    app.add_exception_handler(StarletteHTTPException, method_not_allowed)
    app.add_exception_handler(JobEnded, answer(409))
    app.add_exception_handler(InputGone, answer(409))
    app.add_exception_handler(IdempotencyKeyReused, answer(422))
    app.add_exception_handler(Replayed, replayed)
    app.add_exception_handler(UploadNotFound, answer(404))
    app.add_exception_handler(DirectUploadsUnavailable, answer(404, headers=lambda exc: CLOSE))
    app.add_exception_handler(UploadBusy, answer(409))
    app.add_exception_handler(InvalidInput, answer(400))
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(NotAuthenticated, answer(401, headers=lambda exc: {"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(Forbidden, answer(403))
    app.add_exception_handler(InputTooLarge, answer(413, headers=lambda exc: CLOSE))
    app.add_exception_handler(BodyTooSlow, answer(408, headers=lambda exc: CLOSE))
    app.add_exception_handler(StorageUnavailable, answer(503, headers=lambda exc: CLOSE))
    app.add_exception_handler(StorageFull, answer(507, headers=lambda exc: CLOSE))
    app.add_exception_handler(
        OverQuota, answer(429, headers=lambda exc: {"Retry-After": str(exc.retry_after_s or 1), **CLOSE})
    )
    app.add_exception_handler(NotReplicated, answer(503))
    app.add_exception_handler(
        redis.RedisError, answer(503, {"error": "the job store (Redis) is unavailable; try again"})
    )
