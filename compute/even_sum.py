"""The even-sum job: the exact sum of the even integers in a text file, block by block.

A file of whitespace-separated integers (any ASCII whitespace, optional sign, any length)
is cut into byte ranges; one Dask task per range reads just that range through fsspec
and sums the numbers that start in it (``sum_block``); a tree of ``combine`` tasks adds
the partials up on the cluster. A task's memory is its range plus a little look-ahead,
whatever the file's size.

Partials and results are plain JSON-able dicts:
``{"sum": int, "even_count": int, "count": int, "bytes": int}``.
"""

import threading
import uuid
from collections.abc import Callable

import distributed
import fsspec
import numpy as np
from distributed import Client, Future

from compute import kernel
from compute.defaults import DEFAULT_BLOCK_BYTES
from compute.errors import InvalidNumber

# Bytes read past a block's end at first to finish its last number; more when needed.
LOOK_AHEAD_BYTES = 4096
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


def sum_block(url: str, start: int, end: int, storage_options: dict | None = None) -> dict:
    """The partial for the numbers that START in bytes [start, end) of the file at ``url``.

    Reads the range, the byte before it (is ``start`` inside a number that an earlier
    block owns?) and enough bytes after it to finish its last number. Error offsets are
    absolute in the file."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    base = max(start - 1, 0)  # the file offset of buf[0]
    with fs.open(path, "rb", cache_type="none") as file:
        file.seek(base)
        buf = _read_past(file, end - base)
    first = start - base
    if start > 0 and buf.size and not _is_space(buf[0]):  # a number from the last block
        first = kernel.next_space(buf, first)
    total, even_count, count = _sum_tokens(buf, first, end - base, offset=base)
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
    job = BlockSum(client, url, block_bytes=block_bytes, storage_options=storage_options, key_prefix=key_prefix)
    blocks = [job.submit_next() for _ in range(job.n_blocks)]
    return blocks, job.total()


def even_sum(
    url: str,
    *,
    client: Client | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    window: Callable[[], int] | None = None,
) -> dict:
    """The exact even sum of the file at ``url``, computed on the cluster.

    Parameters
    ----------
    url, block_bytes, storage_options
        As for ``submit_even_sum``.
    client
        A ``distributed.Client``; by default the current one (``distributed.get_client``).
    window
        How many block tasks to keep in flight, asked again as blocks finish; by default
        all of them at once. A bounded window lets other jobs' tasks in between.

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
    return job.run(window or (lambda: job.n_blocks))


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
    ):
        self.client = client
        self.url = url
        self.storage_options = storage_options
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

    def submit_next(self) -> Future:
        """Submit the next block's task (and the combine tasks it completes)."""
        start, end = self.blocks[self.submitted]
        block = self.client.submit(
            sum_block,
            self.url,
            start,
            end,
            storage_options=self.storage_options,
            key=f"{self.key_prefix}-{self.submitted}",
            priority=BLOCK_PRIORITY,
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
        window: Callable[[], int],
        on_progress: Callable[[int, int], None] | None = None,
        wait: Callable[[set[Future]], set[Future]] | None = None,
    ) -> dict:
        """Submit blocks keeping ``window()`` of them in flight; return the result dict.

        ``on_progress(done, in_flight)`` is called as blocks finish; ``wait(futures)``
        returns some that are done (by default ``distributed.wait``, first completed): pass
        one that gives up on a lost cluster to bound the wait. A block that fails raises
        its error here, and the blocks still in flight are cancelled."""
        wait = wait or _first_completed
        in_flight: set[Future] = set()
        done = 0
        while done < self.n_blocks:
            while self.submitted < self.n_blocks and len(in_flight) < max(1, window()):
                in_flight.add(self.submit_next())
            finished = wait(in_flight)
            in_flight -= finished
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
            pass
        return total.result()

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


def _first_completed(futures: set[Future]) -> set[Future]:
    return set(distributed.wait(futures, return_when="FIRST_COMPLETED").done)


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


def _is_space(byte: int) -> bool:
    return byte == 32 or 9 <= byte <= 13


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


def _read_past(file, length: int) -> np.ndarray:
    """Read ``length`` bytes, then on to the first whitespace after them (or the end of
    the file): the number that runs over the range's end belongs to this block."""
    want = length + LOOK_AHEAD_BYTES
    buffer = _buffer(want)
    got = _read_into(file, memoryview(buffer.data)[:want])
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
