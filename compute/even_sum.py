"""The even-sum job: the exact sum of the even integers in a text file, block by block.

A file of whitespace-separated integers (any ASCII whitespace, optional sign, any length)
is cut into byte ranges; one Dask task per range reads just that range through fsspec
and sums the numbers that start in it (``sum_block``); a tree of ``combine`` tasks adds
the partials up on the cluster. A task's memory is its range plus a little look-ahead,
whatever the file's size.

Partials and results are plain JSON-able dicts:
``{"sum": int, "even_count": int, "count": int, "bytes": int}``.
"""

import contextlib
import threading
import uuid

import fsspec
import numpy as np

from compute import kernel, ranged
from compute.errors import InvalidNumber

MiB = 2**20
# 64 MiB, from measurements (docs/benchmarks.md): a job's time is flat from 32 MiB blocks
# up (a block is ~50 ms of reading and parsing; the ~1.5 ms each task costs is noise)
# and grows below; a 5 GiB file still makes 80 tasks to spread over a cluster; a worker
# thread holds about one block.
DEFAULT_BLOCK_BYTES = 64 * MiB
# Bytes read past a block's end at first to finish its last number; more when needed.
LOOK_AHEAD_BYTES = 4096
# combine() tasks take this many partials each: a tree of depth log8(blocks).
FAN_IN = 8
# int() refuses longer digit strings (sys.get_int_max_str_digits, 4300 by default).
INT_DIGITS_AT_ONCE = 4000
# Shown of an invalid token in the error message.
ERROR_TOKEN_CHARS = 40
FIELDS = ("sum", "even_count", "count", "bytes")


def plan_blocks(size: int, block_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most ``block_bytes`` that cover [0, size) in order."""
    if block_bytes <= 0:
        raise ValueError(f"block_bytes must be positive, not {block_bytes}")
    return [(start, min(start + block_bytes, size)) for start in range(0, size, block_bytes)]


def sum_bytes(data) -> dict:
    """The result for a whole file already in memory (bytes, memoryview, uint8 array)."""
    buf = _read_only(np.frombuffer(data, dtype=np.uint8))
    return _partial(*_sum_tokens(buf, 0, buf.size, offset=0), nbytes=buf.size)


def sum_block(
    url: str,
    start: int,
    end: int,
    storage_options: dict | None = None,
    *,
    part_bytes: int = ranged.PART_BYTES,
    concurrency: int = ranged.CONCURRENCY,
) -> dict:
    """The partial for the numbers that START in bytes [start, end) of the file at ``url``.

    Reads the range, the byte before it (is ``start`` inside a number that an earlier
    block owns?) and enough bytes after it to finish its last number. From S3 the range
    comes as concurrent GETs of ``part_bytes``, ``concurrency`` at once, parsed as they
    arrive (compute/ranged.py); other files are read into one reusable buffer. Error
    offsets are absolute in the file."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    base = max(start - 1, 0)  # the file offset of buf[0]
    tally = _Tally(own=end - base, offset=base, skip=start > 0)
    if ranged.reads_in_parts(fs):
        with _readable_errors(url):
            _sum_parts(fs, path, tally, part_bytes, concurrency)
    else:
        with fs.open(path, "rb", cache_type="none") as file:
            file.seek(base)
            tally.take(_read_past(file, tally.own), hint=tally.own, final=True)
    total, even_count, count = tally.counts
    return _partial(total, even_count, count, nbytes=end - start)


def combine(partials: list[dict]) -> dict:
    """Add partials up (associative and commutative; the empty list gives zeros)."""
    return {field: sum(partial[field] for partial in partials) for field in FIELDS}


def submit_even_sum(
    client,
    url: str,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    key_prefix: str = "even-sum",
):
    """Submit one ``sum_block`` task per block (keys ``{key_prefix}-{i}``) and a tree of
    ``combine`` tasks over them (keys ``{key_prefix}-reduce-{level}-{j}``).

    Returns (block futures, to watch progress; the final future, whose result is the
    result dict). Raises FileNotFoundError("not found: ...") for a missing file and
    PermissionError for refused credentials, before anything is submitted."""
    size = _file_size(url, storage_options)
    blocks = plan_blocks(size, block_bytes)
    futures = client.map(
        sum_block,
        [url] * len(blocks),
        [start for start, _ in blocks],
        [end for _, end in blocks],
        [storage_options] * len(blocks),
        key=[f"{key_prefix}-{i}" for i in range(len(blocks))],
    )
    return futures, _reduce_tree(client, futures, key_prefix)


def even_sum(url: str, *, client=None, block_bytes: int = DEFAULT_BLOCK_BYTES, storage_options=None) -> dict:
    """The result dict for ``url``, computed on ``client`` (default: the current one).
    For notebooks: each call has its own task keys, so files never share results."""
    if client is None:
        import distributed

        client = distributed.get_client()
    _, total = submit_even_sum(
        client,
        url,
        block_bytes=block_bytes,
        storage_options=storage_options,
        key_prefix=f"even-sum-{uuid.uuid4().hex[:12]}",
    )
    return total.result()


def warm_up() -> None:
    """Compile the kernel now (or load it from numba's cache), through every path."""
    sum_bytes(b" 12 -4 +7\n" * 20 + b"123456789012345678 1234567890123456789012 5")


def _file_size(url: str, storage_options: dict | None) -> int:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {url}") from None
    except PermissionError as exc:
        raise PermissionError(f"access denied to {url} ({exc}): check the storage credentials") from None
    if info.get("type") == "directory":
        raise IsADirectoryError(f"a directory, not a file: {url}")
    return info["size"]


def _reduce_tree(client, futures: list, key_prefix: str):
    """combine() over ``futures`` in a tree of fan-in FAN_IN, on the cluster."""
    level, nodes = 0, futures
    while True:
        groups = [nodes[i : i + FAN_IN] for i in range(0, len(nodes), FAN_IN)] or [[]]
        nodes = [
            client.submit(combine, group, key=f"{key_prefix}-reduce-{level}-{j}") for j, group in enumerate(groups)
        ]
        if len(nodes) == 1:
            return nodes[0]
        level += 1


def _partial(total: int, even_count: int, count: int, nbytes: int) -> dict:
    return {"sum": total, "even_count": even_count, "count": count, "bytes": nbytes}


def _sum_tokens(buf: np.ndarray, pos: int, stop: int, offset: int) -> tuple[int, int, int]:
    """(sum of the evens, how many even, how many) of the numbers that start in
    buf[pos:stop]; the kernel, and Python for numbers too long for it."""
    state = np.zeros(kernel.STATE_SIZE, dtype=np.int64)
    state[kernel.ERROR_AT] = kernel.NO_ERROR
    longs = np.empty((kernel.LONG_CAPACITY, 2), dtype=np.int64)
    long_sum = long_evens = long_count = 0
    while pos < stop:
        pos = kernel.scan(buf, pos, stop, state, longs)
        if state[kernel.ERROR_AT] != kernel.NO_ERROR:
            raise _invalid_number(buf, int(state[kernel.ERROR_AT]), offset)
        long_count += int(state[kernel.LONG_COUNT])
        for start, end in longs[: state[kernel.LONG_COUNT]]:
            token = bytes(buf[start:end])
            if token[-1] % 2 == 0:  # the last digit's parity is the number's
                long_sum += _to_int(token)
                long_evens += 1
    low, high = int(state[kernel.SUM_LOW]), int(state[kernel.SUM_HIGH])
    total = (high << kernel.LOW_BITS) + low + long_sum
    even_count = int(state[kernel.EVEN_COUNT]) + long_evens
    count = int(state[kernel.COUNT]) + long_count
    return total, even_count, count


def _to_int(token: bytes) -> int:
    """An optionally signed run of digits of any length as an int."""
    negative = token.startswith(b"-")
    value = _digits_value(token.lstrip(b"+-").lstrip(b"0"))
    return -value if negative else value


def _digits_value(digits: bytes) -> int:
    """int(digits) past Python's digit limit: halves, recursively (near-linear, unlike
    folding chunk by chunk)."""
    if len(digits) <= INT_DIGITS_AT_ONCE:
        return int(digits or b"0")
    half = len(digits) // 2
    return _digits_value(digits[:half]) * 10 ** (len(digits) - half) + _digits_value(digits[half:])


def _invalid_number(buf: np.ndarray, start: int, offset: int) -> InvalidNumber:
    end = kernel.next_space(buf, start)
    token = bytes(buf[start : min(end, start + ERROR_TOKEN_CHARS)])
    text = token.decode("ascii", "replace")  # binary garbage shows as U+FFFD
    if end - start > ERROR_TOKEN_CHARS:
        text += "..."
    return InvalidNumber(offset + start, text)


def _read_only(buf: np.ndarray) -> np.ndarray:
    """A read-only view: the kernel then always sees one array type, compiled once."""
    view = buf.view()
    view.flags.writeable = False
    return view


# One reusable read buffer per worker thread: a fresh 64 MiB buffer per block would cost
# page faults on every block (slower than the parse here), and memory stays one block.
_buffers = threading.local()


def _buffer(size: int, keep: int = 0) -> np.ndarray:
    """The thread's buffer, at least ``size`` bytes; a new one keeps the first ``keep``."""
    old = getattr(_buffers, "array", None)
    if old is not None and old.size >= size:
        return old
    _buffers.array = np.empty(size, dtype=np.uint8)
    if keep and old is not None:
        _buffers.array[:keep] = old[:keep]
    return _buffers.array


def _read_past(file, length: int, got: int = 0) -> np.ndarray:
    """Read ``length`` bytes, then on to the first whitespace after them (or the end of
    the file): the number that runs over the range's end belongs to this block. The first
    ``got`` bytes are in the thread's buffer already, ``file`` positioned after them."""
    want = max(length + LOOK_AHEAD_BYTES, got)
    buffer = _buffer(want, keep=got)
    got += _read_into(file, memoryview(buffer.data)[got:want])
    while True:
        cut = kernel.next_space(_read_only(buffer[:got]), min(length, got))
        if cut < got or got < want:  # found, or the end of the file
            return _read_only(buffer[:cut])
        want *= 2
        buffer = _buffer(want, keep=got)
        got += _read_into(file, memoryview(buffer.data)[got:want])


def _read_into(file, view: memoryview) -> int:
    """Fill ``view`` from ``file``; fewer bytes only at the end of the file."""
    got = 0
    while got < len(view):
        n = file.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _sum_parts(fs, path: str, tally: "_Tally", part_bytes: int, concurrency: int) -> None:
    """Read the block from S3 as concurrent ranged GETs into the thread's buffer, counting
    the numbers of each part as soon as it and those before it are in. The last part also
    reads the look-ahead; a number that runs on past it (rare) is finished through a file
    object, which knows where the object ends."""
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be positive, not {part_bytes}")
    want = tally.own + LOOK_AHEAD_BYTES
    # The byte before the block rides with the first part, the look-ahead with the last:
    # 8 GETs for a 64 MiB block in 8 MiB parts, not 9.
    ranges = [
        (tally.offset + start, tally.offset + end) for start, end in plan_blocks(max(tally.own - 1, 1), part_bytes)
    ]
    ranges[-1] = (ranges[-1][0], tally.offset + want)
    buffer = _buffer(want)
    filled = before = 0
    try:
        with contextlib.closing(ranged.fill(fs, path, ranges, memoryview(buffer.data)[:want], concurrency)) as parts:
            for filled in parts:
                tally.take(_read_only(buffer[:filled]), hint=before, final=False)
                before = filled
    except BaseException:
        _buffers.array = None  # cancelled GETs may still write into it for a moment
        raise
    tally.take(_read_only(buffer[:filled]), hint=tally.own, final=filled < want)
    if tally.pos < tally.own:  # its last number runs on past the look-ahead
        with fs.open(path, "rb", cache_type="none") as file:
            file.seek(tally.offset + filled)
            tally.take(_read_past(file, tally.own, got=filled), hint=tally.own, final=True)


class _Tally:
    """The counts of the numbers that start in buf[:own] of a block's buffer, buf[0] at
    file offset ``offset``, taken as the buffer fills from its start."""

    def __init__(self, own: int, offset: int, skip: bool):
        self.own, self.offset = own, offset
        self.skip = skip  # is buf[0] perhaps inside a number that an earlier block owns?
        self.pos = 0  # the numbers that start before pos are counted
        self.counts = [0, 0, 0]  # sum of the evens, how many even, how many

    def take(self, buf: np.ndarray, hint: int, final: bool) -> None:
        """Count on in ``buf`` (the buffer so far, read-only) the numbers that start before
        ``own`` and surely end in it: before the first whitespace at or after ``hint``
        (where the last take stopped looking), or, when ``final``, at ``buf``'s end."""
        if self.skip:  # on to the end of the number buf[0] is in (none if it is whitespace)
            self.pos = kernel.next_space(buf, self.pos)
            if self.pos == buf.size and not final:
                return
            self.skip = False
        if self.pos >= self.own:
            return
        cut = kernel.next_space(buf, max(self.pos, min(hint, self.own)))
        if cut == buf.size and not final:
            return
        more = _sum_tokens(buf[:cut], self.pos, min(cut, self.own), offset=self.offset)
        self.counts = [total + part for total, part in zip(self.counts, more, strict=True)]
        self.pos = cut


@contextlib.contextmanager
def _readable_errors(url: str):
    """Store errors that name the object: s3fs says only "The specified key does not exist."."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {url}") from None
    except PermissionError as exc:
        raise PermissionError(f"access denied to {url} ({exc}): check the storage credentials") from None
