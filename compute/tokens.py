"""The numbers of a byte buffer counted: the kernel for most, Python for the long ones.

``sum_tokens`` counts the numbers that start in a slice of a buffer; a ``Tally`` counts a
block's numbers as its buffer fills from the start, whether it is read at once (a local
file) or in parts that arrive over time (S3).
"""

import numpy as np

from compute import kernel
from compute.errors import InvalidNumber

# int() refuses longer digit strings (sys.get_int_max_str_digits, 4300 by default).
INT_DIGITS_AT_ONCE = 4000
# Shown of an invalid token in the error message.
ERROR_TOKEN_CHARS = 40


def sum_tokens(buf: np.ndarray, pos: int, stop: int, offset: int) -> tuple[int, int, int]:
    """(sum of the evens, how many even, how many) of the numbers that start in
    buf[pos:stop]; the kernel, and Python for numbers too long for it. ``offset`` is the
    file offset of buf[0], for the error of an invalid number."""
    state = np.zeros(kernel.STATE_SIZE, dtype=np.int64)
    state[kernel.ERROR_AT] = kernel.NO_ERROR
    longs = np.empty((kernel.LONG_CAPACITY, 2), dtype=np.int64)
    long_sum = long_evens = long_count = 0
    while pos < stop:
        pos = kernel.scan(buf, pos, stop, state, longs)
        if state[kernel.ERROR_AT] != kernel.NO_ERROR:
            raise invalid_number(buf, int(state[kernel.ERROR_AT]), offset)
        long_count += int(state[kernel.LONG_COUNT])
        for start, end in longs[: state[kernel.LONG_COUNT]]:
            token = bytes(buf[start:end])
            if token[-1] % 2 == 0:  # the last digit's parity is the number's
                long_sum += to_int(token)
                long_evens += 1
    low, high = int(state[kernel.SUM_LOW]), int(state[kernel.SUM_HIGH])
    total = (high << kernel.LOW_BITS) + low + long_sum
    even_count = int(state[kernel.EVEN_COUNT]) + long_evens
    count = int(state[kernel.COUNT]) + long_count
    return total, even_count, count


def to_int(token: bytes) -> int:
    """An optionally signed run of digits of any length as an int."""
    negative = token.startswith(b"-")
    value = digits_value(token.lstrip(b"+-").lstrip(b"0"))
    return -value if negative else value


def digits_value(digits: bytes) -> int:
    """int(digits) past Python's digit limit: halves, recursively (near-linear, unlike
    folding chunk by chunk)."""
    if len(digits) <= INT_DIGITS_AT_ONCE:
        return int(digits or b"0")
    half = len(digits) // 2
    return digits_value(digits[:half]) * 10 ** (len(digits) - half) + digits_value(digits[half:])


def invalid_number(buf: np.ndarray, start: int, offset: int) -> InvalidNumber:
    """The error for the invalid token at buf[start], which is at file offset ``offset + start``."""
    end = kernel.next_space(buf, start)
    token = bytes(buf[start : min(end, start + ERROR_TOKEN_CHARS)])
    text = token.decode("ascii", "replace")  # binary garbage shows as U+FFFD
    if end - start > ERROR_TOKEN_CHARS:
        text += "..."
    return InvalidNumber(offset + start, text)


def read_only(buf: np.ndarray) -> np.ndarray:
    """A read-only view: the kernel then always sees one array type, compiled once."""
    view = buf.view()
    view.flags.writeable = False
    return view


class Tally:
    """The counts of the numbers that start in buf[:own] of a block's buffer, buf[0] at
    file offset ``offset``, taken as the buffer fills from its start."""

    def __init__(self, own: int, offset: int, skip: bool):
        self.own, self.offset = own, offset
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
        more = sum_tokens(buf[:cut], self.pos, min(cut, self.own), offset=self.offset)
        self.counts = [total + part for total, part in zip(self.counts, more, strict=True)]
        self.pos = cut
