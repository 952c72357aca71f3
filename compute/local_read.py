"""A block of a file counted in place (a local file, mapped) or read into the worker
thread's buffer (any other store fsspec opens but S3, which compute/s3_parts.py reads),
on past its end to finish its last number.

A local file is mapped, read-only, from the block's start to ``max_token_bytes`` past
its end (``tally_local``), and the kernel counts the page cache where it lies: no copy.
Copying costs as much CPU as a third of the SIMD kernel's parse (``pread`` at ~9 GB/s a
core against the kernel's ~6), and the workers' cores are the job's limit: with every
core counting blocks, a mapped block costs 1.6-1.9x less CPU than one read into a buffer
(docs/benchmarks.md, "Windows at fixed places, local blocks in place"). Only the pages
up to the number that ends the block are touched; the mapping goes with the task. A
file cut short while it is mapped would end the worker (SIGBUS, and the nanny starts
another): uploads are written whole and moved into place (backend/api/uploads.py),
never cut, and the data folder is the operator's.

Other stores are read in parts of READ_PART_BYTES, the next one on a reader thread while
the kernel counts the last (both release the GIL): read beside the parse, a block costs
about the larger of the two where a core is free. The parts fill the same buffer: memory
is still the block and its look-ahead.

The buffer is one per worker thread and reused from block to block: a fresh 64 MiB
buffer per block would cost page faults on every block (slower than the parse), and
memory stays one block. S3 reads (compute/s3_parts.py) fill the same buffer. A block
reads at most ``max_token_bytes`` past its end (a number that runs on further is too
long), and a buffer that grew for such a read is let go after the task (``block_buffer``).
"""

import concurrent.futures
import contextlib
import mmap
import os
import threading
import traceback
from collections.abc import Iterator

import numpy as np

from compute import kernel
from compute.defaults import MiB
from compute.tokens import Tally, read_only

# Bytes read past a block's end at first to finish its last number; more when needed.
LOOK_AHEAD_BYTES = 4096
# A local block is read in parts of this size, each counted while the next is read: a
# few MiB stay in the CPU's cache (L3) from the read to the parse, and a 64 MiB block
# makes 16 reads (docs/benchmarks.md, "Reading at the kernel's speed").
READ_PART_BYTES = 4 * MiB

_buffers = threading.local()  # .array: this thread's buffer, or None
_readers = threading.local()  # .pool: this thread's reader, one thread, made on first use


def look_ahead(max_token_bytes: int) -> int:
    """What a block reads past its end at first: never past where its last number must end."""
    return min(LOOK_AHEAD_BYTES, max_token_bytes)


def tally_local(path: str, tally: Tally) -> None:
    """Count the block of ``tally`` in the local file ``path`` through a mapping of its
    bytes and up to ``max_token_bytes`` past them (or to the end of the file), cut at the
    first whitespace after the block: the number that runs over the block's end belongs
    to it, and one that runs on to the cap is too long, as the count finds (``read_past``
    does the same with reads)."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        cap = tally.offset + tally.own + tally.max_token_bytes
        view = mapped(file.fileno(), min(tally.offset, size), min(cap, size))
    try:
        tally.take(view[: kernel.next_space(view, min(tally.own, view.size))], hint=tally.own, final=True)
    except BaseException as exc:  # an invalid number: its frames hold views, the mapping goes now
        del view
        traceback.clear_frames(exc.__traceback__)
        raise


def mapped(fd: int, start: int, end: int) -> np.ndarray:
    """Bytes [start, end) of the file ``fd``, mapped read-only. The mapping lasts as long
    as the array (and any view of it): it is its buffer's owner."""
    if end <= start:
        return read_only(np.empty(0, dtype=np.uint8))
    skip = start % mmap.ALLOCATIONGRANULARITY  # a mapping starts on the granularity
    pages = mmap.mmap(fd, end - start + skip, access=mmap.ACCESS_READ, offset=start - skip)
    return read_only(np.frombuffer(pages, dtype=np.uint8)[skip:])


def tally_file(fs, path: str, tally: Tally) -> None:
    """Count the block of ``tally`` in the file ``path`` of ``fs``: its range and
    look-ahead read in parts, each counted while the next is read (``read_in_parts``),
    then on past the look-ahead if its last number runs on (``read_past``)."""
    want = tally.own + look_ahead(tally.max_token_bytes)
    with fs.open(path, "rb", cache_type="none") as file:
        file.seek(tally.offset)
        got = read_in_parts(file, buffer(want), want, tally)
        tally.take(read_past(file, tally.own, tally.max_token_bytes, got=got), hint=tally.own, final=True)


def read_in_parts(file, array: np.ndarray, want: int, tally: Tally) -> int:
    """Fill ``array[:want]`` from ``file`` in parts of READ_PART_BYTES, each read on the
    thread's reader while ``tally`` counts on in the bytes before it; the bytes read
    (fewer than ``want`` only at the end of the file). No read is left running on
    return, error or not: the buffer and the file are the caller's again."""
    view, reader = memoryview(array.data), _reader()
    bounds = [*range(0, want, READ_PART_BYTES), want]  # part k is [bounds[k], bounds[k + 1])
    pending = reader.submit(read_into, file, view[: bounds[1]])
    try:
        for k in range(1, len(bounds)):
            got = bounds[k - 1] + pending.result()
            if got < bounds[k]:  # the end of the file
                return got
            if k + 1 < len(bounds):
                pending = reader.submit(read_into, file, view[bounds[k] : bounds[k + 1]])
            tally.take(read_only(array[:got]), hint=tally.seen, final=False)
        return want
    finally:
        concurrent.futures.wait([pending])


def _reader() -> concurrent.futures.ThreadPoolExecutor:
    """This thread's reader thread: one per worker thread, as its buffer is; it ends
    with the thread (the pool is let go with the thread's locals)."""
    pool = getattr(_readers, "pool", None)
    if pool is None:
        pool = _readers.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="block-reader")
    return pool


@contextlib.contextmanager
def block_buffer(size: int) -> Iterator[None]:
    """Around one block task whose buffer is ``size`` bytes (its range and look-ahead): a
    buffer that grew past that, and past what the thread had, to finish a long number is
    let go afterwards, so that memory is one block again between tasks."""
    before = buffer_bytes()
    try:
        yield
    finally:
        if buffer_bytes() > max(before, size):
            drop_buffer()


def buffer(size: int, keep: int = 0) -> np.ndarray:
    """The thread's buffer, at least ``size`` bytes; a new one keeps the first ``keep``."""
    old = getattr(_buffers, "array", None)
    if old is not None and old.size >= size:
        return old
    _buffers.array = np.empty(size, dtype=np.uint8)
    if keep and old is not None:
        _buffers.array[:keep] = old[:keep]
    return _buffers.array


def buffer_bytes() -> int:
    """The size of the thread's buffer (0: none)."""
    array = getattr(_buffers, "array", None)
    return 0 if array is None else array.size


def drop_buffer() -> None:
    """Let the thread's buffer go: the next block gets a new one."""
    _buffers.array = None


def read_past(file, length: int, max_token_bytes: int, got: int = 0) -> np.ndarray:
    """Read ``length`` bytes, then on to the first whitespace after them, the end of the
    file or ``max_token_bytes`` past them, whichever comes first: the number that runs
    over the range's end belongs to this block, and one that runs on to that cap is too
    long, as the count of the bytes returned finds (compute/tokens.py). The first ``got``
    bytes are in the thread's buffer already, ``file`` positioned after them."""
    cap = length + max_token_bytes
    want = min(max(length + look_ahead(max_token_bytes), got), cap)
    array = buffer(want, keep=got)
    got += read_into(file, memoryview(array.data)[got:want])
    while True:
        cut = kernel.next_space(read_only(array[:got]), min(length, got))
        if cut < got or got < want or want == cap:  # found, the end of the file, or the cap
            return read_only(array[:cut])
        want = cap  # one step: each step copies the block into a larger buffer
        array = buffer(want, keep=got)
        got += read_into(file, memoryview(array.data)[got:want])


def read_into(file, view: memoryview) -> int:
    """Fill ``view`` from ``file``; fewer bytes only at the end of the file."""
    got = 0
    while got < len(view):
        n = file.readinto(view[got:])
        if not n:
            break
        got += n
    return got
