"""The numbers of a byte buffer counted: the kernel for most, Python for the long ones.

``sum_tokens`` counts the numbers that start in a slice of a buffer; a ``Tally`` counts a
block's numbers as its buffer fills from the start, whether it is read at once (a local
file) or in parts that arrive over time (S3).

A number longer than ``max_token_bytes`` (compute.defaults.MAX_TOKEN_BYTES) is an error,
NumberTooLong, as an invalid one is: the first of either in the file is the one raised.
That limit is what lets a block stop reading at most that far past its end.
"""

import numpy as np

from compute import kernel
from compute.defaults import MAX_TOKEN_BYTES
from compute.digits import digits_value
from compute.errors import InvalidNumber, NumberTooLong

# Shown of an invalid token in the error message.
ERROR_TOKEN_CHARS = 40
# The kernel's whitespace (ASCII 9-13 and the space), as a table of the 256 byte values.
IS_SPACE = np.zeros(256, dtype=bool)
IS_SPACE[[9, 10, 11, 12, 13, 32]] = True
# A token's start is looked for backwards in steps of at most this many bytes: the
# step's temporary arrays stay small.
BACK_STEP_BYTES = 64 * 1024


def sum_tokens(
    buf: np.ndarray, pos: int, stop: int, offset: int, max_token_bytes: int = MAX_TOKEN_BYTES
) -> tuple[int, int, int]:
    """(sum of the evens, how many even, how many) of the numbers that start in
    buf[pos:stop]; the kernel, and Python for numbers too long for it. ``offset`` is the
    file offset of buf[0], for the errors; ``pos`` is at whitespace or a token's start.

    Raises the first error in buf[pos:stop]: InvalidNumber, or NumberTooLong for a token
    of over ``max_token_bytes`` (a token that runs to ``buf``'s end ends there)."""
    too_long = _first_too_long(buf, pos, stop, max_token_bytes)
    total, even_count, count = _sum_valid(buf, pos, min(stop, too_long), offset)
    if too_long < stop:
        raise NumberTooLong(offset + too_long, _shown(buf, too_long), max_token_bytes)
    return total, even_count, count


def _first_too_long(buf: np.ndarray, pos: int, stop: int, max_token_bytes: int) -> int:
    """The start of the first token that starts in buf[pos:stop] and is longer than
    ``max_token_bytes``, or ``stop``. Such a token holds one of the bytes pos,
    pos + max_token_bytes, pos + 2 * max_token_bytes...: only those are looked at, and
    the token around each, so the cost is a few bytes per ``max_token_bytes``."""
    if max_token_bytes < 1:
        raise ValueError(f"max_token_bytes must be positive, not {max_token_bytes}")
    for probe in range(pos, min(stop + max_token_bytes, buf.size), max_token_bytes):
        if IS_SPACE[buf[probe]]:
            continue
        start = _token_start(buf, probe, pos)
        if start >= stop:
            break
        if kernel.next_space(buf, probe) - start > max_token_bytes:
            return start
    return stop


def _token_start(buf: np.ndarray, at: int, floor: int) -> int:
    """Where the token holding buf[at] starts, looking back no further than ``floor``."""
    step = 64
    while at > floor:
        low = max(floor, at - step)
        spaces = np.flatnonzero(IS_SPACE[buf[low:at]])
        if spaces.size:
            return low + int(spaces[-1]) + 1
        at, step = low, min(2 * step, BACK_STEP_BYTES)
    return floor


def _sum_valid(buf: np.ndarray, pos: int, stop: int, offset: int) -> tuple[int, int, int]:
    """``sum_tokens`` of a slice whose tokens are all within the length limit."""
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
    value = digits_value(token.lstrip(b"+-").lstrip(b"0"))
    return -value if negative else value


def _invalid_number(buf: np.ndarray, start: int, offset: int) -> InvalidNumber:
    """The error for the invalid token at buf[start], which is at file offset ``offset + start``."""
    return InvalidNumber(offset + start, _shown(buf, start))


def _shown(buf: np.ndarray, start: int) -> str:
    """The start of the token at buf[start], as an error message shows it."""
    end = kernel.next_space(buf[: start + ERROR_TOKEN_CHARS + 1], start)
    token = bytes(buf[start : min(end, start + ERROR_TOKEN_CHARS)])
    text = token.decode("ascii", "replace")  # binary garbage shows as U+FFFD
    if end - start > ERROR_TOKEN_CHARS:
        text += "..."
    return text


def read_only(buf: np.ndarray) -> np.ndarray:
    """A read-only view: the kernel then always sees one array type, compiled once."""
    view = buf.view()
    view.flags.writeable = False
    return view


class Tally:
    """The counts of the numbers that start in buf[:own] of a block's buffer, buf[0] at
    file offset ``offset``, taken as the buffer fills from its start."""

    def __init__(self, own: int, offset: int, skip: bool, max_token_bytes: int = MAX_TOKEN_BYTES):
        if max_token_bytes < 1:
            raise ValueError(f"max_token_bytes must be positive, not {max_token_bytes}")
        self.own, self.offset = own, offset
        self.max_token_bytes = max_token_bytes
        self.skip = skip  # is buf[0] perhaps inside a number that an earlier block owns?
        self.pos = 0  # the numbers that start before pos are counted
        self.seen = 0  # how much of the buffer the last take was given
        self.error: InvalidNumber | None = None  # an error kept for later (compute/s3_parts.py)
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
        more = sum_tokens(buf[:cut], self.pos, min(cut, self.own), self.offset, self.max_token_bytes)
        self.counts = [total + part for total, part in zip(self.counts, more, strict=True)]
        self.pos = cut
