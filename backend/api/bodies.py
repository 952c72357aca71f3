"""Reading request bodies with limits: a size cap that holds without a declared length,
a pace floor (408 for a client that stalls or drips), and small JSON bodies as models."""

from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from backend.api.uploads import paced
from backend.core.exceptions import InputTooLarge, problems
from backend.core.settings import Settings
from compute.defaults import MiB
from compute.errors import InvalidInput

# The largest JSON body of the direct-upload routes: 10,000 parts' ETags are ~700 KB.
JSON_BODY_MAX_BYTES = MiB
# A {"url"} body: a URL is at most a few KB (uploads.URL_MAX_CHARS).
URL_BODY_MAX_BYTES = 64 * 1024

M = TypeVar("M", bound=BaseModel)


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
    return await read_rest(b"", body_chunks(request, settings), max_bytes)


async def read_start(chunks: AsyncIterator[bytes], size: int) -> bytes:
    """At least the body's first ``size`` bytes (all of it, if shorter), as they arrive:
    what a door judges a body by before it reads the rest."""
    start = bytearray()
    async for chunk in chunks:
        start += chunk
        if len(start) >= size:
            break
    return bytes(start)


async def with_start(start: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body that began with ``start`` (read by read_start), as chunks again."""
    yield start
    async for chunk in chunks:
        yield chunk


async def read_rest(start: bytes, chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The body that began with ``start``, refusing to hold more than ``max_bytes``."""
    body = bytearray(start)
    while len(body) <= max_bytes:
        chunk = await anext(chunks, None)
        if chunk is None:
            return bytes(body)
        body += chunk
    raise InputTooLarge(f"body is over the limit of {max_bytes} bytes")


async def read_model(
    request: Request,
    settings: Settings,
    model: type[M],
    max_bytes: int = JSON_BODY_MAX_BYTES,
    example: str | None = None,
) -> M:
    """A small JSON body as ``model``; InvalidInput saying what is wrong with it (or, given
    ``example``, what it should look like)."""
    try:
        return model.model_validate_json(await read_body(request, settings, max_bytes))
    except ValidationError as exc:
        if example is not None:
            raise InvalidInput(f"expected a JSON body like {example}") from None
        raise InvalidInput(f"the JSON body is not right: {problems(exc.errors(), 'body')}") from None
