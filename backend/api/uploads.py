"""Inputs of even-sum jobs: streamed uploads, and URLs checked against an allow-list.

Uploads are written to the uploads store (a folder, or S3) in large chunks as they
arrive, so a 5 GB body never sits in the API's memory and never goes into Redis.
Every body is paced (``paced``): a client that stops sending, or drips bytes, is cut.
"""

import asyncio
import errno
import logging
import os
import posixpath
import re
import time
from collections.abc import AsyncIterator, Container
from typing import IO, Any
from urllib.parse import urlsplit

import fsspec
from fsspec import AbstractFileSystem
from fsspec.spec import AbstractBufferedFile
from starlette.concurrency import run_in_threadpool

from backend.core.exceptions import BodyTooSlow, InputTooLarge, StorageFull, StorageUnavailable
from compute.defaults import MiB
from compute.errors import InvalidInput
from compute.files import open_new

log = logging.getLogger(__name__)

# Writes are batched to this size: big enough that the thread hop per write is noise,
# small enough to keep the API's memory flat, and >= S3's 5 MiB multipart minimum.
WRITE_CHUNK_BYTES = 8 * MiB
# ... and for an image kept as a file (up to 20 MiB, many at once): a write a MiB keeps
# each in flight at about a MiB of the API's memory, not 8 (s3fs buffers its own parts).
IMAGE_WRITE_BYTES = MiB
ALLOWED_SCHEMES = ("s3", "file")
# S3 keys are at most 1024 bytes and bucket names 63; local paths are longer only in theory.
URL_MAX_CHARS = 2048
# The shape of a URL that {"url"} may name, published as the OpenAPI `pattern`: s3://bucket/key
# (a valid bucket name) or file:///path, in printable ASCII without spaces, query, fragment,
# %-escapes or backslashes, nor colons in the path (fsspec reads "a::b" as a chain of file systems)
# nor glob characters (*?[]{}). Plain character classes only, so every regex dialect reads it alike.
URL_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]|file://(localhost)?)/[A-Za-z0-9!'()+,./=@_~-]*$"
URL_SHAPE = "s3://bucket/key or file:///path, in letters, digits and !'()+,-./=@_~ only"
URL_RULES = (
    f"{URL_SHAPE}, at most {URL_MAX_CHARS} characters. It must lie under one of the server's allowed prefixes "
    "(SPACETIME_ALLOWED_URL_PREFIXES, by default the uploads store) once normalised and, for file://, "
    'once links are resolved; otherwise the answer is 400 "URL not allowed: ...".'
)
# Errors of the uploads store that mean "no room" (507) rather than "not reachable" (503).
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


async def paced(chunks: AsyncIterator[bytes], min_bytes_per_s: float, grace_s: float) -> AsyncIterator[bytes]:
    """``chunks``, cut with BodyTooSlow when the client stalls or drips.

    Each chunk must come within ``grace_s`` of the previous one, and the body must average
    ``min_bytes_per_s`` after a head start of ``grace_s``: a stalled client or one that
    sends a byte at a time (slowloris) is cut, while any client faster than the floor never
    notices. Time the server spends writing a chunk is not held against the client.
    """
    loop = asyncio.get_running_loop()
    rate_deadline = loop.time() + grace_s
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout_at(min(rate_deadline, loop.time() + grace_s)):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BodyTooSlow(
                f"the body came too slowly: keep it above {min_bytes_per_s:g} bytes/s and never pause for {grace_s:g} s"
            ) from None
        rate_deadline += len(chunk) / min_bytes_per_s
        yield chunk


# A local upload is written under this suffix and renamed when complete, so that a file
# without it is always whole. On S3 an unfinished multipart upload is invisible anyway.
PART_SUFFIX = ".part"


async def save_stream(
    chunks: AsyncIterator[bytes], url: str, max_bytes: int, storage_options: dict, write_bytes: int = WRITE_CHUNK_BYTES
) -> int:
    """Write ``chunks`` to ``url``, ``write_bytes`` at a time; return the byte count.
    Nothing is left behind on failure, and nothing is ever seen half-written at ``url``: a
    local file is written as ``<name>.part`` and renamed when whole (on S3 an unfinished
    multipart upload is invisible anyway).

    The file is opened at the first write, so an empty body (InvalidInput), or a small one
    cut short, never touches the store. The store's own failures (a full or read-only
    folder, an unreachable bucket) become StorageFull or StorageUnavailable.
    """
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    staging = path + PART_SUFFIX if _is_local(fs) else path
    out: IO[bytes] | None = None
    size = 0
    pending = bytearray()
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise InputTooLarge(f"upload is over the limit of {max_bytes} bytes")
            pending += chunk
            if len(pending) >= write_bytes:
                if out is None:
                    out = await run_in_threadpool(open_new, fs, staging)
                await run_in_threadpool(out.write, bytes(pending))
                pending.clear()
        if size == 0:
            raise InvalidInput(
                'the body is empty: send the file\'s bytes (curl -T FILE), or JSON {"url": ...} '
                "with Content-Type: application/json"
            )
        if out is None:
            out = await run_in_threadpool(open_new, fs, staging)
        await run_in_threadpool(out.write, bytes(pending))
        await run_in_threadpool(out.close)
        if staging != path:
            await run_in_threadpool(fs.mv, staging, path)
    except OSError as exc:
        await run_in_threadpool(_abandon, fs, out, staging)
        raise storage_error(exc, url) from exc
    except BaseException:
        await run_in_threadpool(_abandon, fs, out, staging)
        raise
    return size


def _abandon(fs: AbstractFileSystem, out: Any, path: str) -> None:
    """Drop a partial upload (client gone, over the limit, store failing) without
    committing it. Best effort: the error that brought us here is the one the client must
    hear about."""
    try:
        if isinstance(out, AbstractBufferedFile):  # s3fs and kin: abort the multipart upload
            out.discard()
        elif out is not None:
            out.close()
    except OSError:
        pass  # the same failure again (a full disk refuses the flush); the delete below still runs
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError:
        log.warning("could not remove the partial upload %s", path, exc_info=True)


def storage_error(exc: OSError, url: str) -> StorageFull | StorageUnavailable:
    """The client's side of a store failure; the operator's side (which folder, why) goes to the log."""
    log.warning("the uploads store failed writing %s: %s", url, exc)
    if exc.errno in NO_ROOM:
        return StorageFull("the uploads store is full; try again later")
    return StorageUnavailable("the uploads store cannot take uploads right now; try again later")


def sweep_partial_uploads(
    url: str, storage_options: dict, older_than_s: float, keep: Container[str] = frozenset()
) -> int:
    """Remove what uploads cut off by a crash of the API left: ``.part`` files in a local
    store (its folders too: images kept as files are under ``images/``), unfinished
    multipart uploads on S3 (under its whole prefix), untouched for ``older_than_s`` (an upload
    in progress writes every few MiB, so it is never that old). Returns how many.

    ``keep``: the S3 upload ids of pending direct uploads (backend/api/direct_uploads.py), which
    clients fill for as long as their expiry allows, however old; their own sweep aborts
    them once expired."""
    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    cutoff = time.time() - older_than_s
    if _is_local(fs):
        parts = [path for path in fs.find(root) if path.endswith(PART_SUFFIX)]
        stale = [path for path in parts if fs.modified(path).timestamp() < cutoff]
        for path in stale:
            fs.rm(path)
        return len(stale)
    bucket, _, prefix = root.partition("/")
    uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix).get("Uploads", [])
    stale = [u for u in uploads if u["Initiated"].timestamp() < cutoff and u["UploadId"] not in keep]
    for upload in stale:
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return len(stale)


def _is_local(fs: AbstractFileSystem) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def check_allowed_url(url: str, prefixes: list[str]) -> str:
    """Return ``url`` normalised if it lies under one of ``prefixes``; else InvalidInput.

    Normalising first is what defeats ``../`` tricks: the check runs on the path the
    worker will really open, not on the text the client sent. For file:// URLs the real
    path (links resolved) must lie under a file:// prefix too, which defeats a link placed
    in an allowed folder; a link swapped in after this check is docs/security.md's business.
    Nothing is opened here: only the lstat calls of resolving links.
    """
    if len(url) > URL_MAX_CHARS:
        raise InvalidInput(f"the URL is longer than {URL_MAX_CHARS} characters")
    # Before urlsplit, which silently drops tabs and line breaks.
    if not (url.isascii() and url.isprintable()) or " " in url:
        raise InvalidInput("the URL must not contain spaces, control characters or non-ASCII characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" read as an IPv6 host
        raise InvalidInput(f"not a URL: {exc}") from None
    if parts.scheme not in ALLOWED_SCHEMES:
        raise InvalidInput(f"unsupported URL scheme {parts.scheme!r}; use one of: s3://, file://")
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise InvalidInput("file:// URLs must name a local path (file:///...)")
    if parts.query or parts.fragment:
        raise InvalidInput("the URL must not have a query or a fragment")
    if "%" in url or "\\" in url:
        raise InvalidInput("the URL must not contain escapes or backslashes")
    if not re.fullmatch(URL_PATTERN, url):
        raise InvalidInput(f"the URL must look like {URL_SHAPE}")
    root = "/" + parts.netloc if parts.scheme == "s3" else ""
    path = posixpath.normpath(root + parts.path)
    normal = f"s3:/{path}" if parts.scheme == "s3" else f"file://{path}"
    if not any(normal.startswith(prefix.rstrip("/") + "/") for prefix in prefixes):
        # Not which prefixes: they are a map of the service's storage.
        raise InvalidInput(f"URL not allowed: {url} is not under a prefix this service reads")
    if parts.scheme == "file" and not _really_under(path, prefixes):
        raise InvalidInput(f"URL not allowed: {url} goes through a link that leads outside the allowed prefixes")
    return normal


def _really_under(path: str, prefixes: list[str]) -> bool:
    """Whether ``path``, links resolved, lies under one of the file:// ``prefixes``, links resolved."""
    real = os.path.realpath(path)
    folders = [os.path.realpath(urlsplit(prefix).path) for prefix in prefixes if prefix.startswith("file://")]
    return any(real.startswith(folder.rstrip("/") + "/") for folder in folders)
