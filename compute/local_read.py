"""A block of a local file read into the worker thread's buffer, on past its end to
finish its last number.

The buffer is one per worker thread and reused from block to block: a fresh 64 MiB
buffer per block would cost page faults on every block (slower than the parse), and
memory stays one block. S3 reads (compute/s3_parts.py) fill the same buffer. A block
reads at most ``max_token_bytes`` past its end (a number that runs on further is too
long), and a buffer that grew for such a read is let go after the task (``block_buffer``).
"""

import contextlib
import threading
from collections.abc import Iterator

import numpy as np

from compute import kernel
from compute.tokens import Tally, read_only

# Bytes read past a block's end at first to finish its last number; more when needed.
LOOK_AHEAD_BYTES = 4096

_buffers = threading.local()  # .array: this thread's buffer, or None


def look_ahead(max_token_bytes: int) -> int:
    """What a block reads past its end at first: never past where its last number must end."""
    return min(LOOK_AHEAD_BYTES, max_token_bytes)


def tally_file(fs, path: str, tally: Tally) -> None:
    """Count the block of ``tally`` in the file ``path`` of ``fs``, read in one go."""
    with fs.open(path, "rb", cache_type="none") as file:
        file.seek(tally.offset)
        tally.take(read_past(file, tally.own, tally.max_token_bytes), hint=tally.own, final=True)


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
