"""Concurrent sub-range reads of one byte range of an S3 object, straight into a buffer.

One GET stream from S3 runs at the order of 100 MB/s however fast the worker; AWS's
guidance is several concurrent byte-range GETs of 8-16 MB on the same object. A block
task here reads its range as parts of ``S3_PART_BYTES``, ``S3_CONCURRENCY`` GETs at a time, on
s3fs's event loop, each body read straight into its place in the block's buffer, and
learns as each part and those before it are in: it parses a part while the next ones
download.

Memory: the block's buffer and nothing of the size of a part besides (s3fs's
``_cat_file`` returns each part as bytes, joined from a list of chunks: with 8 parts
finishing together that was 2 more blocks at the peak).
"""

import asyncio
import itertools
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future

from compute.defaults import S3_CONCURRENCY


def reads_in_parts(fs) -> bool:
    """Whether ``fs`` is s3fs (S3, MinIO, moto), which this module reads; other stores
    are read as files."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "s3" in protocols


def fill(
    fs, path: str, ranges: list[tuple[int, int]], view: memoryview, concurrency: int = S3_CONCURRENCY
) -> Generator[int, None, None]:
    """Fill ``view`` with the [start, end) ``ranges`` of ``path``, one after another, up to
    ``concurrency`` GETs at a time (the next starts as each is taken); yield how many bytes
    of ``view`` are in after each range, in order. Only the last range may come short (the
    end of the object).

    Use it under ``contextlib.closing``: closed early, it cancels the GETs in flight, but
    a chunk may still land in ``view`` as they stop, so do not reuse ``view`` then. Every
    wait is bounded by s3fs's own timeouts and retries."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    offsets = itertools.accumulate((end - start for start, end in ranges), initial=0)  # one more: the total
    parts = zip(ranges, offsets, strict=False)
    todo = ((start, end, view[offset : offset + end - start]) for (start, end), offset in parts)
    pending: deque[tuple[Future, int, int]] = deque(
        _fetch(fs, path, *part) for part in itertools.islice(todo, concurrency)
    )
    filled = 0
    try:
        while pending:
            future, start, end = pending.popleft()
            got = future.result()
            pending.extend(_fetch(fs, path, *part) for part in itertools.islice(todo, 1))
            if got < end - start and pending:
                raise OSError(f"{path}: {got} bytes at {start} where {end - start} were asked: did it change?")
            filled += got
            yield filled
    finally:
        for future, _, _ in pending:
            future.cancel()


def _fetch(fs, path: str, start: int, end: int, view: memoryview) -> tuple[Future, int, int]:
    """One ranged GET into ``view``, started on s3fs's event loop."""
    return asyncio.run_coroutine_threadsafe(_get_into(fs, path, start, end, view), fs.loop), start, end


async def _get_into(fs, path: str, start: int, end: int, view: memoryview) -> int:
    """GET [start, end) of ``path`` into ``view``; how many bytes came. s3fs retries the
    request; a body cut short is asked for again, as s3fs's own reads do, up to its
    ``retries`` times in all."""
    from s3fs.core import S3_RETRYABLE_ERRORS  # imported already by whoever made ``fs``

    bucket, key, _ = fs.split_path(path)
    attempt = 0
    while True:
        try:
            return await _get_once(fs, bucket, key, f"bytes={start}-{end - 1}", view)
        except S3_RETRYABLE_ERRORS:
            attempt += 1
            if attempt >= fs.retries:
                raise
            await asyncio.sleep(min(1.7**attempt * 0.1, 15))  # s3fs's back-off


async def _get_once(fs, bucket: str, key: str, byte_range: str, view: memoryview) -> int:
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=byte_range)
    body, got = response["Body"], 0
    try:
        while got < len(view) and (n := await body.readinto(view[got:])):
            got += n
    finally:
        body.close()
    return got
