"""A block of an S3 object read as concurrent ranged GETs, each part counted as it arrives.

The parts of a block download at the same rate and end together, so a block counted
from its start only as each part ended had its whole parse left once the last part
landed. Here every part has a tally of its own, fed as its bytes arrive
(``ranged.fill_parts``), and little is left to count when the last byte is in.
"""

import contextlib

import numpy as np

from compute import ranged
from compute.defaults import MiB
from compute.errors import InvalidNumber
from compute.local_read import buffer, drop_buffer, look_ahead, read_past
from compute.tokens import Tally, read_only

# A part is counted on each time this much more of it has arrived: often enough that
# little is left once it lands, seldom enough that the calls cost nothing.
PARSE_STEP_BYTES = 1 * MiB


def tally_parts(fs, path: str, tally: Tally, part_bytes: int, concurrency: int) -> None:
    """Count the block of ``tally`` in the object ``path`` of ``fs`` (s3fs), read into the
    thread's buffer as GETs of ``part_bytes``, ``concurrency`` at once, each part counted
    on its own as its bytes arrive (``_part_tallies``). The last part also reads the
    look-ahead; a number that runs on past it (rare) is finished through a file object,
    which knows where the object ends, at most ``tally.max_token_bytes`` past the block."""
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be positive, not {part_bytes}")
    want = tally.own + look_ahead(tally.max_token_bytes)
    # The byte before the block rides with the first part, the look-ahead with the last:
    # 8 GETs for a 64 MiB block in 8 MiB parts, not 9.
    starts = list(range(0, max(tally.own - 1, 1), part_bytes))
    ends = [*starts[1:], want]
    ranges = [(tally.offset + start, tally.offset + end) for start, end in zip(starts, ends, strict=True)]
    parts = _part_tallies(tally, starts)
    array = buffer(want)
    try:
        with contextlib.closing(
            ranged.fill_parts(fs, path, ranges, memoryview(array.data)[:want], concurrency, PARSE_STEP_BYTES)
        ) as filling:
            for state in filling:
                _take_arrived(parts, starts, state, array)
    except BaseException:
        drop_buffer()  # cancelled GETs may still write into it for a moment
        raise
    filled = sum(state.got)
    for part, start in zip(parts, starts, strict=True):  # everything is in: on to the next whitespace, or the end
        _take(part, read_only(array[start:filled]), final=filled < want)
    _raise_first_error(parts)
    if any(part.pos < part.own for part in parts):  # a number runs on past the look-ahead
        with fs.open(path, "rb", cache_type="none") as file:
            file.seek(tally.offset + filled)
            whole = read_past(file, tally.own, tally.max_token_bytes, got=filled)
        for part, start in zip(parts, starts, strict=True):
            _take(part, whole[start:], final=True)
        _raise_first_error(parts)
    tally.counts = [sum(counts) for counts in zip(*(part.counts for part in parts), strict=True)]
    tally.pos = tally.own


def _part_tallies(tally: Tally, starts: list[int]) -> list[Tally]:
    """A tally for each part of the block's buffer, from its start. Part k owns the numbers
    that start from its first byte up to and including the next part's first byte (a
    number starting there is told apart by the byte before it, which only part k has);
    each later part skips the number its first byte is in. The first part is the block's
    start (the byte before the block decides), the last ends where the block does."""
    bounds = [*starts[1:], None]
    return [
        Tally(
            own=(tally.own if end is None else end + 1) - start,
            offset=tally.offset + start,
            skip=tally.skip if i == 0 else True,
            max_token_bytes=tally.max_token_bytes,
        )
        for i, (start, end) in enumerate(zip(starts, bounds, strict=True))
    ]


def _take_arrived(parts: list[Tally], starts: list[int], state: ranged.Filling, array: np.ndarray) -> None:
    """Count on in each part what has arrived of it, and of the parts after it as far as
    the bytes are in one run (a part's last number ends in the next part)."""
    for k, (part, start) in enumerate(zip(parts, starts, strict=True)):
        end, j = start + state.got[k], k
        while state.ended[j] and j + 1 < len(starts):  # on into the next part
            j += 1
            end = starts[j] + state.got[j]
        if end - start > part.seen:
            _take(part, read_only(array[start:end]), final=False)
    _raise_first_error(parts)


def _take(part: Tally, buf: np.ndarray, final: bool) -> None:
    """``part.take``, an invalid number kept on the part: a later part may have its bytes
    first, and the error to raise is the first in the file."""
    if part.error is None and part.pos < part.own:
        try:
            part.take(buf, hint=part.seen, final=final)
        except InvalidNumber as exc:
            part.error = exc


def _raise_first_error(parts: list[Tally]) -> None:
    """Raise the first part's error once every part before it is counted whole."""
    for part in parts:
        if part.error is not None:
            raise part.error
        if part.pos < part.own:
            return
