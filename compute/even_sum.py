"""The even-sum job: the exact sum of the even integers in a text file, block by block.

A file of whitespace-separated integers (any ASCII whitespace, optional sign, any length)
is cut into byte ranges; one Dask task per range reads just that range through fsspec
and sums the numbers that start in it (``sum_block``); a tree of ``combine`` tasks adds
the partials up on the cluster. A task's memory is its range plus a little look-ahead,
whatever the file's size, and at most its range plus the longest number allowed
(MAX_TOKEN_BYTES, compute/defaults.py).

This module holds the entry points; the work is in
- compute/tokens.py: the numbers of a buffer counted (the kernel, and Python for long ones);
- compute/local_read.py: a block of a local file counted in place, or of another store read into the thread's buffer;
- compute/s3_parts.py: a block of an S3 object read as concurrent parts, counted as they arrive;
- compute/reduction.py: ``combine``, the tree of combine tasks, and how blocks are paced.

Partials and results are plain JSON-able dicts:
``{"sum": int, "even_count": int, "count": int, "bytes": int}``.
"""

import contextlib
import uuid
from collections.abc import Callable

import distributed
import fsspec
import numpy as np
from distributed import Client, Future
from fsspec.implementations.local import LocalFileSystem

from compute import ranged
from compute.defaults import DEFAULT_BLOCK_BYTES, MAX_TOKEN_BYTES, S3_CONCURRENCY, S3_PART_BYTES
from compute.errors import Cancelled
from compute.local_read import LOOK_AHEAD_BYTES, block_buffer, look_ahead, tally_file, tally_local
from compute.reduction import (
    BLOCK_PRIORITY,
    FAN_IN,
    AllAtOnce,
    Pacing,
    ReductionTree,
    combine,
    first_completed,
)
from compute.s3_parts import tally_parts
from compute.tokens import Tally, read_only, sum_tokens

# The names callers import from here, wherever they are defined.
__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "FAN_IN",
    "LOOK_AHEAD_BYTES",
    "MAX_TOKEN_BYTES",
    "BlockSum",
    "Pacing",
    "combine",
    "even_sum",
    "plan_blocks",
    "submit_even_sum",
    "sum_block",
    "sum_bytes",
    "warm_up",
]


def plan_blocks(size: int, block_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most ``block_bytes`` that cover [0, size) in order."""
    if block_bytes <= 0:
        raise ValueError(f"block_bytes must be positive, not {block_bytes}")
    return [(start, min(start + block_bytes, size)) for start in range(0, size, block_bytes)]


def sum_bytes(data, *, max_token_bytes: int = MAX_TOKEN_BYTES) -> dict:
    """The result for a whole file already in memory (bytes, memoryview, uint8 array);
    a number of over ``max_token_bytes`` is refused, as in ``sum_block``."""
    buf = read_only(np.frombuffer(data, dtype=np.uint8))
    return _partial(*sum_tokens(buf, 0, buf.size, 0, max_token_bytes), nbytes=buf.size)


def sum_block(
    url: str,
    start: int,
    end: int,
    storage_options: dict | None = None,
    *,
    part_bytes: int = S3_PART_BYTES,
    concurrency: int = S3_CONCURRENCY,
    max_token_bytes: int = MAX_TOKEN_BYTES,
) -> dict:
    """The partial for the numbers that START in bytes [start, end) of the file at ``url``.

    Reads the range, the byte before it (is ``start`` inside a number that an earlier
    block owns?) and enough bytes after it to finish its last number. From S3 the range
    comes as concurrent GETs of ``part_bytes``, ``concurrency`` at once, parsed as they
    arrive (compute/s3_parts.py); a local file is mapped and counted in place, and other
    stores' files are read into one reusable buffer (compute/local_read.py). Error
    offsets are absolute in the file.

    A number of over ``max_token_bytes`` is an error (compute.errors.NumberTooLong, an
    InvalidNumber): so the read never goes more than that past ``end``, and no number
    costs Python more than about a second to convert (compute/defaults.py)."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    base = max(start - 1, 0)  # the file offset of buf[0]
    tally = Tally(own=end - base, offset=base, skip=start > 0, max_token_bytes=max_token_bytes)
    with block_buffer(tally.own + look_ahead(max_token_bytes)):
        if ranged.reads_in_parts(fs):
            with _readable_errors(url):
                tally_parts(fs, path, tally, part_bytes, concurrency)
        elif isinstance(fs, LocalFileSystem):
            tally_local(path, tally)
        else:
            tally_file(fs, path, tally)
    total, even_count, count = tally.counts
    return _partial(total, even_count, count, nbytes=end - start)


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
        The block futures (to watch progress) and the future of the result dict. If
        blocks fail, ``total`` has the error of the first to fail, which need not be the
        first in the file (``even_sum`` and ``BlockSum.run`` raise that one).

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
    pacing: Pacing | None = None,
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
        For the first token that is not an integer, or is longer than MAX_TOKEN_BYTES
        (``NumberTooLong``), with its byte offset in the file (``BlockSum.run``: the
        blocks in flight after it are cancelled).

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

    Blocks are submitted in file order, each added to a ``ReductionTree``
    (compute/reduction.py), whose combine tasks run ahead of blocks (priority), so
    partials never pile up on the workers.

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
        self._tree = ReductionTree(client, key_prefix)

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
        self._tree.add(block)
        return block

    def total(self) -> Future:
        """The future of the result: the tree's last combine tasks, once every block is in."""
        if self.submitted < self.n_blocks:
            raise RuntimeError(f"{self.n_blocks - self.submitted} blocks are not submitted yet")
        return self._tree.total()

    def run(
        self,
        pacing: Pacing | None = None,
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

        A block that fails raises its error here, the first in the file: the blocks in
        flight after it are cancelled, and those before it awaited (one of them may fail too).

        Examples
        --------
        >>> job = BlockSum(client, "s3://bucket/numbers.txt")  # doctest: +SKIP
        >>> job.run(on_progress=lambda done, _: print(done, "/", job.n_blocks))  # doctest: +SKIP
        """
        pacing = pacing or AllAtOnce(self.n_blocks)
        wait = wait or first_completed
        in_flight: dict[Future, float] = {}  # block -> its priority
        order: dict[Future, int] = {}  # block -> its place in the file
        done = 0
        cancelled = cancelled or never
        while done < self.n_blocks:
            self._stop_if(cancelled, in_flight)
            while self.submitted < self.n_blocks and len(in_flight) < max(1, pacing.window()):
                priority = pacing.priority()
                block = self.submit_next(priority)
                in_flight[block], order[block] = priority, self.submitted - 1
            finished = wait(set(in_flight))
            self._stop_if(cancelled, in_flight)
            pacing.done([in_flight.pop(block) for block in finished])
            failed = [block for block in finished if block.status == "error"]
            if failed:
                raise self._first_error(failed, in_flight, order, pacing, wait)
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
        self.client.cancel([*in_flight, *self._tree.pending()])
        raise Cancelled(f"{self.key_prefix}: cancelled after {self.submitted} of {self.n_blocks} blocks")

    def _first_error(
        self,
        failed: list[Future],
        in_flight: dict[Future, float],
        order: dict[Future, int],
        pacing: Pacing,
        wait: Callable[[set[Future]], set[Future]],
    ) -> BaseException:
        """The error of the first failed block in the file, as ``sum_block`` over the blocks
        in turn would raise it: blocks run in any order, and a later block may fail first.
        The blocks in flight after the first failed one are cancelled; those before it are
        awaited."""
        first = min(failed, key=order.__getitem__)
        while True:
            after = [block for block in in_flight if order[block] > order[first]]
            self.client.cancel(after)
            for block in after:
                del in_flight[block]
            if not in_flight:
                return first.exception()
            finished = wait(set(in_flight))
            pacing.done([in_flight.pop(block) for block in finished])
            first = min([first, *(block for block in finished if block.status == "error")], key=order.__getitem__)


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


@contextlib.contextmanager
def _readable_errors(url: str):
    """Store errors that name the object: s3fs says only "The specified key does not exist."."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {url}") from None
    except PermissionError as exc:
        raise PermissionError(f"access denied to {url} ({exc}): check the storage credentials") from None


def never() -> bool:
    """A run that is never cancelled (notebooks, benchmarks)."""
    return False
