"""Concurrent sub-range reads of one byte range of an object in a store (S3 and the like).

One GET stream from S3 runs at the order of 100 MB/s however fast the worker; AWS's
guidance is several concurrent byte-range GETs of 8-16 MB on the same object. A block
task reads its range as parts of ``PART_BYTES``, ``CONCURRENCY`` requests at a time, on the
filesystem's own event loop (fsspec's async filesystems: s3fs, gcsfs, http), and takes the
parts back in order, each as soon as it and those before it are in: the caller parses a
part while the next ones download.

Memory: ``CONCURRENCY`` requests in flight plus the part the caller holds, about one
block at the defaults; the caller's buffer is the other block.
"""

import asyncio
import itertools
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future

from fsspec.asyn import AsyncFileSystem

MiB = 2**20
# AWS recommends 8-16 MB ranged GETs; 8 MiB parts make 8 requests of a 64 MiB block.
PART_BYTES = 8 * MiB
# Requests in flight per block task: at ~100 MB/s a stream (S3), 8 fill a 10 Gbit/s
# share of a worker thread; beyond, the worker's network or CPU is the limit.
CONCURRENCY = 8


def reads_in_parts(fs) -> bool:
    """Whether ``fs`` serves concurrent ranged reads (an object store client, not a disk)."""
    return isinstance(fs, AsyncFileSystem)


def read_parts(
    fs, path: str, ranges: list[tuple[int, int]], concurrency: int = CONCURRENCY
) -> Generator[bytes, None, None]:
    """The bytes of each [start, end) of ``ranges`` of ``path``, in order, fetched up to
    ``concurrency`` at a time (the next is asked for as each is taken, before it is yielded).

    A part is shorter than asked only at the end of the object. Use it under
    ``contextlib.closing``: closing it early cancels the requests still in flight. Every
    wait is bounded by the filesystem's own timeouts and retries (s3fs: connect and read
    timeouts)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    todo = iter(ranges)
    pending: deque[Future] = deque(_fetch(fs, path, start, end) for start, end in itertools.islice(todo, concurrency))
    try:
        while pending:
            data = pending.popleft().result()
            pending.extend(_fetch(fs, path, start, end) for start, end in itertools.islice(todo, 1))
            yield data
    finally:
        for future in pending:
            future.cancel()


def _fetch(fs, path: str, start: int, end: int) -> Future:
    """One ranged GET, started on ``fs``'s event loop; its bytes come back in the future."""
    return asyncio.run_coroutine_threadsafe(fs._cat_file(path, start=start, end=end), fs.loop)
