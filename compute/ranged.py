"""Concurrent sub-range reads of one byte range of an S3 object, straight into a buffer.

One GET stream from S3 runs at the order of 100 MB/s however fast the worker; AWS's
guidance is several concurrent byte-range GETs of 8-16 MB on the same object. A block
task here reads its range as parts of ``S3_PART_BYTES``, ``S3_CONCURRENCY`` GETs at a time, on
s3fs's event loop, each body read straight into its place in the block's buffer, and
learns how far each part is as its chunks land: the block task parses every part as its
bytes arrive (compute/s3_parts.py), so that little is left to parse once the last lands.

Memory: the block's buffer and nothing of the size of a part besides (s3fs's
``_cat_file`` returns each part as bytes, joined from a list of chunks: with 8 parts
finishing together that was 2 more blocks at the peak).
"""

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

from compute.defaults import S3_CONCURRENCY


def reads_in_parts(fs) -> bool:
    """Whether ``fs`` is s3fs (S3, MinIO, moto), which this module reads; other stores
    are read as files."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "s3" in protocols


@dataclass
class Filling:
    """How far ``fill_parts`` is: ``got[i]`` bytes of range ``i`` are in (from its start),
    and ``ended[i]`` once its GET is over (short only where the object ends)."""

    got: list[int]
    ended: list[bool]


def fill_parts(
    fs, path: str, ranges: list[tuple[int, int]], view: memoryview, concurrency: int = S3_CONCURRENCY, step: int = 0
) -> Generator[Filling, None, None]:
    """Fill ``view`` with the [start, end) ``ranges`` of ``path``, one after another, up to
    ``concurrency`` GETs at a time (the next starts as one ends, in order); yield the
    ``Filling`` each time a range has ``step`` more bytes in (0: only as ranges end) or
    ends. A range that comes short before the last one is an error: the object changed.

    Use it under ``contextlib.closing``: closed early, it cancels the GETs in flight, but
    a chunk may still land in ``view`` as they stop, so do not reuse ``view`` then. Every
    wait is bounded by s3fs's own timeouts and retries."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    offsets = list(itertools.accumulate((end - start for start, end in ranges), initial=0))
    filling = Filling([0] * len(ranges), [False] * len(ranges))
    woke_at = [0] * len(ranges)  # got[i] when range i last woke the reader
    wake = threading.Event()

    def arrived(i: int, got: int) -> None:  # on s3fs's event loop, as each chunk lands
        filling.got[i] = got
        if step and got - woke_at[i] >= step:
            woke_at[i] = got
            wake.set()

    def start(i: int) -> Future:
        part = view[offsets[i] : offsets[i + 1]]
        future = asyncio.run_coroutine_threadsafe(_get_into(fs, path, *ranges[i], part, partial(arrived, i)), fs.loop)
        future.add_done_callback(lambda _: wake.set())
        return future

    todo = iter(range(len(ranges)))
    in_flight = {i: start(i) for i in itertools.islice(todo, concurrency)}
    try:
        while in_flight:
            wake.wait()
            wake.clear()
            for i, future in [(i, future) for i, future in in_flight.items() if future.done()]:
                del in_flight[i]
                got = future.result()  # raises what the GET raised
                start_, end = ranges[i]
                if got < end - start_ and i < len(ranges) - 1:
                    raise OSError(f"{path}: {got} bytes at {start_} where {end - start_} were asked: did it change?")
                filling.got[i], filling.ended[i] = got, True
                in_flight.update((j, start(j)) for j in itertools.islice(todo, 1))
            yield filling
    finally:
        for future in in_flight.values():
            future.cancel()


def fill(
    fs, path: str, ranges: list[tuple[int, int]], view: memoryview, concurrency: int = S3_CONCURRENCY
) -> Generator[int, None, None]:
    """``fill_parts``, told in order: yield how many bytes of ``view`` are in after each
    range, one range after another. Only the last range may come short (the end of the
    object). Use it under ``contextlib.closing``, as ``fill_parts``."""
    told, filled = 0, 0
    with contextlib.closing(fill_parts(fs, path, ranges, view, concurrency)) as filling:
        for state in filling:
            while told < len(ranges) and state.ended[told]:
                filled += state.got[told]
                told += 1
                yield filled


async def _get_into(fs, path: str, start: int, end: int, view: memoryview, arrived: Callable[[int], None]) -> int:
    """GET [start, end) of ``path`` into ``view``; how many bytes came, each chunk told to
    ``arrived`` as it lands. s3fs retries the request; a body cut short is asked for
    again, as s3fs's own reads do, up to its ``retries`` times in all."""
    from s3fs.core import S3_RETRYABLE_ERRORS  # imported already by whoever made ``fs``

    bucket, key, _ = fs.split_path(path)
    attempt = 0
    while True:
        try:
            return await _get_once(fs, bucket, key, f"bytes={start}-{end - 1}", view, arrived)
        except S3_RETRYABLE_ERRORS:
            attempt += 1
            if attempt >= fs.retries:
                raise
            await asyncio.sleep(min(1.7**attempt * 0.1, 15))  # s3fs's back-off


async def _get_once(fs, bucket: str, key: str, byte_range: str, view: memoryview, arrived) -> int:
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=byte_range)
    body, got = response["Body"], 0
    try:
        while got < len(view) and (n := await body.readinto(view[got:])):
            got += n
            arrived(got)
    finally:
        body.close()
    return got
