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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import distributed
import fsspec
import numpy as np
from distributed import Client, Future

from compute import kernel, ranged
from compute.defaults import DEFAULT_BLOCK_BYTES, S3_CONCURRENCY, S3_PART_BYTES, MiB
from compute.errors import Cancelled, InvalidNumber

# Bytes read past a block's end at first to finish its last number; more when needed.
LOOK_AHEAD_BYTES = 4096
# A part read from S3 is counted on each time this much more of it has arrived: often
# enough that little is left once it lands, seldom enough that the calls cost nothing.
PARSE_STEP_BYTES = 1 * MiB
# combine() tasks take this many partials each: a tree of depth log8(blocks).
FAN_IN = 8
# Dask runs ready tasks of higher priority first: a combine frees its partials, so it
# goes ahead of blocks (image tasks, at IMAGE_PRIORITY in compute.image, go ahead of both).
BLOCK_PRIORITY = 0
COMBINE_PRIORITY = 1
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
    part_bytes: int = S3_PART_BYTES,
    concurrency: int = S3_CONCURRENCY,
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
    client: Client,
    url: str,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    key_prefix: str = "even-sum",
    part_bytes: int = S3_PART_BYTES,
    concurrency: int = S3_CONCURRENCY,
) -> tuple[list[Future], Future]:
    """Submit the whole job at once: every block and the reduction tree.

    Parameters
    ----------
    client
        A ``distributed.Client``.
    url
        The file: a path, ``file://`` or ``s3://`` URL (anything fsspec opens).
    block_bytes
        Bytes per ``sum_block`` task; a worker thread holds about one block.
    storage_options
        fsspec options for ``url`` (e.g. ``{"client_kwargs": {"endpoint_url": ...}}``).
    key_prefix
        Task keys are ``{key_prefix}-{i}`` for block ``i`` and
        ``{key_prefix}-reduce-{level}-{j}`` for the ``combine`` tasks.
    part_bytes, concurrency
        Over S3, each block is read as GETs of ``part_bytes``, ``concurrency`` at a time
        (compute/ranged.py). A worker of T threads holds T x concurrency GETs in flight.

    Returns
    -------
    (blocks, total)
        The block futures (to watch progress) and the future of the result dict.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        Before anything is submitted: no such file ("not found: <url>"), a folder, or
        credentials the store refuses.

    Examples
    --------
    >>> blocks, total = submit_even_sum(client, "s3://bucket/numbers.txt")  # doctest: +SKIP
    >>> distributed.progress(blocks)  # doctest: +SKIP
    >>> total.result()["sum"]  # doctest: +SKIP
    """
    job = BlockSum(
        client,
        url,
        block_bytes=block_bytes,
        storage_options=storage_options,
        key_prefix=key_prefix,
        part_bytes=part_bytes,
        concurrency=concurrency,
    )
    blocks = [job.submit_next() for _ in range(job.n_blocks)]
    return blocks, job.total()


def even_sum(
    url: str,
    *,
    client: Client | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    pacing: "Pacing | None" = None,
) -> dict:
    """The exact even sum of the file at ``url``, computed on the cluster.

    Parameters
    ----------
    url, block_bytes, storage_options
        As for ``submit_even_sum``.
    client
        A ``distributed.Client``; by default the current one (``distributed.get_client``).
    pacing
        How many block tasks to keep in flight and at what priority (a ``Pacing``); by
        default all of them at once. A bounded window lets other jobs' tasks in between.

    Returns
    -------
    dict
        ``{"sum": int, "even_count": int, "count": int, "bytes": int}``; ``sum`` is exact
        at any size.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        As ``submit_even_sum``, before any task runs.
    compute.errors.InvalidNumber
        For the first token that is not an integer, with its byte offset in the file
        (the blocks still in flight are cancelled).

    Examples
    --------
    >>> even_sum("s3://bucket/numbers.txt", client=client)  # doctest: +SKIP
    {'sum': 1343990382773514, 'even_count': 1250311, 'count': 2500000, 'bytes': 26843545}
    """
    if client is None:
        client = distributed.get_client()
    # Each call has task keys of its own, so that two files never share results.
    prefix = f"even-sum-{uuid.uuid4().hex[:12]}"
    job = BlockSum(client, url, block_bytes=block_bytes, storage_options=storage_options, key_prefix=prefix)
    return job.run(pacing)


class BlockSum:
    """One even sum on a cluster: blocks submitted as a window allows, partials reduced.

    Blocks are submitted in file order; a ``combine`` task of FAN_IN partials is submitted
    as soon as its blocks are, so the reduction tree (and its task keys) is the same
    whether the blocks went all at once or a few at a time. Combine tasks run ahead of
    blocks (priority), so partials never pile up on the workers.

    ``run`` submits blocks as they finish; in a notebook, every block at once is::

        job = BlockSum(client, "s3://bucket/numbers.txt", key_prefix="trial-1")
        blocks = [job.submit_next() for _ in range(job.n_blocks)]  # watch them: distributed.progress(blocks)
        job.total().result()  # {"sum": ..., "even_count": ..., "count": ..., "bytes": ...}

    Parameters
    ----------
    client, url, block_bytes, storage_options, key_prefix
        As for ``submit_even_sum``.
    resources
        Dask resources each block task needs (e.g. ``{"bulk": 1}``), or None.
    part_bytes, concurrency
        How a block is read from an object store: GETs of ``part_bytes``, ``concurrency``
        at once (compute/ranged.py).
    """

    def __init__(
        self,
        client: Client,
        url: str,
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        storage_options: dict | None = None,
        key_prefix: str = "even-sum",
        resources: dict | None = None,
        part_bytes: int = S3_PART_BYTES,
        concurrency: int = S3_CONCURRENCY,
    ):
        self.client = client
        self.url = url
        self.storage_options = storage_options
        self.part_bytes = part_bytes
        self.concurrency = concurrency
        self.key_prefix = key_prefix
        self.resources = resources
        self.blocks = plan_blocks(_file_size(url, storage_options), block_bytes)
        self.submitted = 0
        # levels[n]: futures of tree level n (0: blocks) not yet under a combine task
        self._levels: list[list[Future]] = [[]]
        self._combined: list[int] = [0]  # combine tasks submitted per level

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def submit_next(self, priority: float = BLOCK_PRIORITY) -> Future:
        """Submit the next block's task at Dask ``priority`` (and the combine tasks it completes)."""
        start, end = self.blocks[self.submitted]
        block = self.client.submit(
            sum_block,
            self.url,
            start,
            end,
            storage_options=self.storage_options,
            part_bytes=self.part_bytes,
            concurrency=self.concurrency,
            key=f"{self.key_prefix}-{self.submitted}",
            priority=priority,
            resources=self.resources,
        )
        self.submitted += 1
        self._add(0, block)
        return block

    def total(self) -> Future:
        """The future of the result: the tree's last combine tasks, once every block is in.

        Level by level, the partial group left over is combined into the next level, until
        a level holds the one node that a single combine made: the result."""
        if self.submitted < self.n_blocks:
            raise RuntimeError(f"{self.n_blocks - self.submitted} blocks are not submitted yet")
        level = 0
        while not (level > 0 and self._combined[level - 1] == 1):
            if self._levels[level] or self._combined[level] == 0:  # (an empty file: combine([]))
                self._combine(level)
            level += 1
        return self._levels[level][0]

    def run(
        self,
        pacing: "Pacing | None" = None,
        on_progress: Callable[[int, int], None] | None = None,
        wait: Callable[[set[Future]], set[Future]] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> dict:
        """Submit the blocks as ``pacing`` allows, wait for them, and return the result.

        Parameters
        ----------
        pacing
            How many blocks to keep in flight and at what Dask priority to submit each,
            told of the blocks that finish (a ``Pacing``; the dispatcher's is
            backend/jobs/fairshare.py). Default: all at once, at BLOCK_PRIORITY.
        on_progress
            Called as ``on_progress(done, in_flight)`` whenever blocks finish.
        wait
            ``wait(futures)`` returns some that are done; by default ``distributed.wait``
            (first completed). Pass one that gives up on a lost cluster to bound the wait.
        cancelled
            Asked before each submission and after each wait: once it says True, the
            sum's tasks still on the cluster are cancelled and ``Cancelled`` is raised, so
            a run stops within the time of one block.

        Returns
        -------
        dict
            ``{"sum", "even_count", "count", "bytes"}``, exact.

        A block that fails raises its error here, and the blocks still in flight are
        cancelled.

        Examples
        --------
        >>> job = BlockSum(client, "s3://bucket/numbers.txt")  # doctest: +SKIP
        >>> job.run(on_progress=lambda done, _: print(done, "/", job.n_blocks))  # doctest: +SKIP
        """
        pacing = pacing or AllAtOnce(self.n_blocks)
        wait = wait or _first_completed
        in_flight: dict[Future, float] = {}  # block -> its priority
        done = 0
        cancelled = cancelled or _never
        while done < self.n_blocks:
            self._stop_if(cancelled, in_flight)
            while self.submitted < self.n_blocks and len(in_flight) < max(1, pacing.window()):
                priority = pacing.priority()
                in_flight[self.submit_next(priority)] = priority
            finished = wait(set(in_flight))
            self._stop_if(cancelled, in_flight)
            pacing.done([in_flight.pop(block) for block in finished])
            for block in finished:
                if block.status == "error":
                    error = block.exception()
                    self.client.cancel(list(in_flight))
                    raise error
            done += len(finished)
            if on_progress:
                on_progress(done, len(in_flight))
        total = self.total()
        while total not in wait({total}):
            self._stop_if(cancelled, {})
        self._stop_if(cancelled, {})
        return total.result()

    def _stop_if(self, cancelled: Callable[[], bool], in_flight: dict[Future, float]) -> None:
        """Raise Cancelled once ``cancelled()``, after cancelling every task of the sum the
        cluster may still run: the blocks in flight and the combine tasks not yet under
        another (those under one go with it: nothing else wants them)."""
        if not cancelled():
            return
        self.client.cancel([*in_flight, *(future for level in self._levels for future in level)])
        raise Cancelled(f"{self.key_prefix}: cancelled after {self.submitted} of {self.n_blocks} blocks")

    def _add(self, level: int, future: Future) -> None:
        self._levels[level].append(future)
        if len(self._levels[level]) == FAN_IN:
            self._combine(level)

    def _combine(self, level: int) -> None:
        """Put the futures waiting at ``level`` under one combine task of the next level."""
        group, self._levels[level] = self._levels[level], []
        if level + 1 == len(self._levels):
            self._levels.append([])
            self._combined.append(0)
        node = self.client.submit(
            combine,
            group,
            key=f"{self.key_prefix}-reduce-{level}-{self._combined[level]}",
            priority=COMBINE_PRIORITY,
        )
        self._combined[level] += 1
        self._add(level + 1, node)


class Pacing(Protocol):
    """How a BlockSum submits its blocks: how many in flight, at what priority."""

    def window(self) -> int:
        """How many blocks to keep in flight now."""
        ...

    def priority(self) -> float:
        """The Dask priority of the next block (higher runs first)."""
        ...

    def done(self, priorities: list[float]) -> None:
        """Blocks submitted at these priorities finished."""
        ...


@dataclass
class AllAtOnce:
    """Every block at once, at BLOCK_PRIORITY: a job alone on its cluster (notebooks)."""

    blocks: int

    def window(self) -> int:
        return self.blocks

    def priority(self) -> float:
        return BLOCK_PRIORITY

    def done(self, priorities: list[float]) -> None:
        pass


def _never() -> bool:
    return False


def _first_completed(futures: set[Future]) -> set[Future]:
    return set(distributed.wait(futures, return_when="FIRST_COMPLETED").done)


def warm_up() -> None:
    """Compile the kernel now (or load it from numba's cache), through every path."""
    sum_bytes(b" 12 -4 +7\n" * 20 + b"123456789012345678 1234567890123456789012 5")


def _file_size(url: str, storage_options: dict | None) -> int:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    with _readable_errors(url):
        info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(f"a directory, not a file: {url}")
    return info["size"]


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
    """Read the block from S3 as concurrent ranged GETs into the thread's buffer, and count
    each part's numbers as its bytes arrive, every part on its own (``_part_tallies``):
    the parts download at the same rate and end together, so a block counted from its
    start only as each part ended had its whole parse left once the last part landed. The
    last part also reads the look-ahead; a number that runs on past it (rare) is finished
    through a file object, which knows where the object ends."""
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be positive, not {part_bytes}")
    want = tally.own + LOOK_AHEAD_BYTES
    # The byte before the block rides with the first part, the look-ahead with the last:
    # 8 GETs for a 64 MiB block in 8 MiB parts, not 9.
    starts = [start for start, _ in plan_blocks(max(tally.own - 1, 1), part_bytes)]
    ends = [*starts[1:], want]
    ranges = [(tally.offset + start, tally.offset + end) for start, end in zip(starts, ends, strict=True)]
    parts = _part_tallies(tally, starts)
    buffer = _buffer(want)
    try:
        with contextlib.closing(
            ranged.fill_parts(fs, path, ranges, memoryview(buffer.data)[:want], concurrency, PARSE_STEP_BYTES)
        ) as filling:
            for state in filling:
                _take_arrived(parts, starts, state, buffer)
    except BaseException:
        _buffers.array = None  # cancelled GETs may still write into it for a moment
        raise
    filled = sum(state.got)
    for part, start in zip(parts, starts, strict=True):  # everything is in: on to the next whitespace, or the end
        _take(part, _read_only(buffer[start:filled]), final=filled < want)
    _raise_first_error(parts)
    if any(part.pos < part.own for part in parts):  # a number runs on past the look-ahead
        with fs.open(path, "rb", cache_type="none") as file:
            file.seek(tally.offset + filled)
            whole = _read_past(file, tally.own, got=filled)
        for part, start in zip(parts, starts, strict=True):
            _take(part, whole[start:], final=True)
        _raise_first_error(parts)
    tally.counts = [sum(counts) for counts in zip(*(part.counts for part in parts), strict=True)]
    tally.pos = tally.own


def _part_tallies(tally: "_Tally", starts: list[int]) -> list["_Tally"]:
    """A tally for each part of the block's buffer, from its start. Part k owns the numbers
    that start from its first byte up to and including the next part's first byte (a
    number starting there is told apart by the byte before it, which only part k has);
    each later part skips the number its first byte is in. The first part is the block's
    start (the byte before the block decides), the last ends where the block does."""
    bounds = [*starts[1:], None]
    return [
        _Tally(
            own=(tally.own if end is None else end + 1) - start,
            offset=tally.offset + start,
            skip=tally.skip if i == 0 else True,
        )
        for i, (start, end) in enumerate(zip(starts, bounds, strict=True))
    ]


def _take_arrived(parts: list["_Tally"], starts: list[int], state: ranged.Filling, buffer: np.ndarray) -> None:
    """Count on in each part what has arrived of it, and of the parts after it as far as
    the bytes are in one run (a part's last number ends in the next part)."""
    for k, (part, start) in enumerate(zip(parts, starts, strict=True)):
        end, j = start + state.got[k], k
        while state.ended[j] and j + 1 < len(starts):  # on into the next part
            j += 1
            end = starts[j] + state.got[j]
        if end - start > part.seen:
            _take(part, _read_only(buffer[start:end]), final=False)
    _raise_first_error(parts)


def _take(part: "_Tally", buf: np.ndarray, final: bool) -> None:
    """``part.take``, an invalid number kept on the part: a later part may have its bytes
    first, and the error to raise is the first in the file."""
    if part.error is None and part.pos < part.own:
        try:
            part.take(buf, hint=part.seen, final=final)
        except InvalidNumber as exc:
            part.error = exc


def _raise_first_error(parts: list["_Tally"]) -> None:
    """Raise the first part's error once every part before it is counted whole."""
    for part in parts:
        if part.error is not None:
            raise part.error
        if part.pos < part.own:
            return


class _Tally:
    """The counts of the numbers that start in buf[:own] of a block's buffer, buf[0] at
    file offset ``offset``, taken as the buffer fills from its start."""

    def __init__(self, own: int, offset: int, skip: bool):
        self.own, self.offset = own, offset
        self.skip = skip  # is buf[0] perhaps inside a number that an earlier block owns?
        self.pos = 0  # the numbers that start before pos are counted
        self.seen = 0  # how much of the buffer the last take was given
        self.error: InvalidNumber | None = None  # see _take
        self.counts = [0, 0, 0]  # sum of the evens, how many even, how many

    def take(self, buf: np.ndarray, hint: int, final: bool) -> None:
        """Count on in ``buf`` (the buffer so far, read-only) the numbers that start before
        ``own`` and surely end in it: before the first whitespace at or after ``hint``
        (where the last take stopped looking), or, when ``final``, at ``buf``'s end."""
        self.seen = max(self.seen, buf.size)
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
