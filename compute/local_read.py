"""A block of a local file read into the worker thread's buffer, on past its end to
finish its last number.

The buffer is one per worker thread and reused from block to block: a fresh 64 MiB
buffer per block would cost page faults on every block (slower than the parse), and
memory stays one block. S3 reads (compute/s3_parts.py) fill the same buffer.
"""

import threading

import numpy as np

from compute import kernel
from compute.tokens import Tally, read_only

# Bytes read past a block's end at first to finish its last number; more when needed.
LOOK_AHEAD_BYTES = 4096

_buffers = threading.local()  # .array: this thread's buffer, or None


def tally_file(fs, path: str, tally: Tally) -> None:
    """Count the block of ``tally`` in the file ``path`` of ``fs``, read in one go."""
    with fs.open(path, "rb", cache_type="none") as file:
        file.seek(tally.offset)
        tally.take(read_past(file, tally.own), hint=tally.own, final=True)


def buffer(size: int, keep: int = 0) -> np.ndarray:
    """The thread's buffer, at least ``size`` bytes; a new one keeps the first ``keep``."""
    old = getattr(_buffers, "array", None)
    if old is not None and old.size >= size:
        return old
    _buffers.array = np.empty(size, dtype=np.uint8)
    if keep and old is not None:
        _buffers.array[:keep] = old[:keep]
    return _buffers.array


def drop_buffer() -> None:
    """Let the thread's buffer go: the next block gets a new one."""
    _buffers.array = None


def read_past(file, length: int, got: int = 0) -> np.ndarray:
    """Read ``length`` bytes, then on to the first whitespace after them (or the end of
    the file): the number that runs over the range's end belongs to this block. The first
    ``got`` bytes are in the thread's buffer already, ``file`` positioned after them."""
    want = max(length + LOOK_AHEAD_BYTES, got)
    array = buffer(want, keep=got)
    got += read_into(file, memoryview(array.data)[got:want])
    while True:
        cut = kernel.next_space(read_only(array[:got]), min(length, got))
        if cut < got or got < want:  # found, or the end of the file
            return read_only(array[:cut])
        want *= 2
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
