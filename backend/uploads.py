"""Inputs of even-sum jobs: streamed uploads, and URLs checked against an allow-list.

Uploads are written to the uploads store (a folder, or S3) in large chunks as they
arrive, so a 5 GB body never sits in the API's memory and never goes into Redis.
"""

import posixpath
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import fsspec
from fsspec import AbstractFileSystem
from starlette.concurrency import run_in_threadpool

from backend.exceptions import InputTooLarge
from compute.errors import InvalidInput

# Writes are batched to this size: big enough that the thread hop per write is noise,
# small enough to keep the API's memory flat, and >= S3's 5 MiB multipart minimum.
WRITE_CHUNK_BYTES = 8 * 1024 * 1024
ALLOWED_SCHEMES = ("s3", "file")


# A local upload is written under this suffix and renamed when complete, so that a file
# without it is always whole. On S3 an unfinished multipart upload is invisible anyway.
PART_SUFFIX = ".part"


async def save_stream(chunks: AsyncIterator[bytes], url: str, max_bytes: int, storage_options: dict) -> int:
    """Write ``chunks`` to ``url``; return the byte count. Nothing is left behind on
    failure, and nothing is ever seen half-written at ``url``."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    staging = path + PART_SUFFIX if _is_local(fs) else path
    await run_in_threadpool(fs.makedirs, posixpath.dirname(path), exist_ok=True)
    out = await run_in_threadpool(fs.open, staging, "wb")
    size = 0
    pending = bytearray()
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise InputTooLarge(f"upload is over the limit of {max_bytes} bytes")
            pending += chunk
            if len(pending) >= WRITE_CHUNK_BYTES:
                await run_in_threadpool(out.write, bytes(pending))
                pending.clear()
        await run_in_threadpool(out.write, bytes(pending))
        await run_in_threadpool(out.close)
        if staging != path:
            await run_in_threadpool(fs.mv, staging, path)
    except BaseException:
        await run_in_threadpool(_abandon, fs, out, staging)
        raise
    return size


def _abandon(fs: AbstractFileSystem, out: Any, path: str) -> None:
    """Drop a partial upload (client gone, or over the limit) without committing it."""
    if hasattr(out, "discard"):  # s3fs: abort the multipart upload
        out.discard()
    else:
        out.close()
    if fs.exists(path):
        fs.rm(path)


def sweep_partial_uploads(url: str, storage_options: dict, older_than_s: float) -> int:
    """Remove what uploads cut off by a crash of the API left: ``.part`` files in a local
    store, unfinished multipart uploads on S3, untouched for ``older_than_s`` (an upload
    in progress writes every few MiB, so it is never that old). Returns how many."""
    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    cutoff = time.time() - older_than_s
    if _is_local(fs):
        stale = [path for path in fs.glob(f"{root}/*{PART_SUFFIX}") if fs.modified(path).timestamp() < cutoff]
        for path in stale:
            fs.rm(path)
        return len(stale)
    bucket, _, prefix = root.partition("/")
    uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix).get("Uploads", [])
    stale = [u for u in uploads if u["Initiated"].timestamp() < cutoff]
    for upload in stale:
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return len(stale)


def _is_local(fs: AbstractFileSystem) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def discard(url: str, storage_options: dict) -> None:
    """Delete a stored upload whose job was refused after all (over quota)."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if fs.exists(path):
        fs.rm(path)


def check_allowed_url(url: str, prefixes: list[str]) -> str:
    """Return ``url`` normalised if it lies under one of ``prefixes``; else InvalidInput.

    Normalising first is what defeats ``../`` tricks: the check runs on the path the
    worker will really open, not on the text the client sent.
    """
    parts = urlsplit(url)
    if parts.scheme not in ALLOWED_SCHEMES:
        raise InvalidInput(f"unsupported URL scheme {parts.scheme!r}; use one of: s3://, file://")
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise InvalidInput("file:// URLs must name a local path (file:///...)")
    if parts.query or parts.fragment:
        raise InvalidInput("the URL must not have a query or a fragment")
    if "%" in url or "\\" in url:
        raise InvalidInput("the URL must not contain escapes or backslashes")
    root = "/" + parts.netloc if parts.scheme == "s3" else ""
    path = posixpath.normpath(root + parts.path)
    if not path.strip("/"):
        raise InvalidInput("the URL does not name an object")
    normal = f"s3:/{path}" if parts.scheme == "s3" else f"file://{path}"
    for prefix in prefixes:
        if normal.startswith(prefix.rstrip("/") + "/"):
            return normal
    raise InvalidInput(f"URL not allowed: {url}; allowed prefixes: {', '.join(prefixes)}")
