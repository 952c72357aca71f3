"""The even-sum kernel in numba: the portable path (compute/kernel.py chooses the path),
one pass over a byte buffer of whitespace-separated integers. It runs on any CPU numba
compiles for, and the SIMD paths (compute/_simd.c) answer exactly like it.

A plain byte loop is slow less for its work than for its chains: each byte's branch
waits on the last, and each number's end decides where the next begins. This kernel
classifies 64 bytes at a time with vector compares into bitmasks (whitespace, bytes that
are neither whitespace nor digits, signs), so where every token of the window starts and
ends is known up front; each token is then parsed on its own, 8 digits to a word, with a
few multiplications (SWAR) and no branch per digit. Invalid bytes, numbers of over 18
digits and the first and last bytes of the buffer take a careful byte-by-byte path.

Sums are exact: two int64 words (``_add``) for numbers of up to 18 significant digits;
longer ones are handed back to Python by offset, which parses them into an ``int``.
"""

import os
import tempfile
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _use_a_writable_cache_dir() -> None:
    """Compile once per machine, not once per worker start: numba caches beside this file,
    else in ~/.cache/numba; read-only containers often have neither, so fall back to the
    temp dir. NUMBA_CACHE_DIR, when set, wins. Runs before the first ``cache=True``."""
    if numba.config.CACHE_DIR:
        return
    user_wide = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numba"
    if _writable(Path(__file__).parent / "__pycache__") or _writable(user_wide):
        return
    numba.config.CACHE_DIR = str(Path(tempfile.gettempdir()) / "spacetime-numba-cache")


_use_a_writable_cache_dir()

# The scan's state, one int64 each, so that a scan can stop and resume.
SUM_LOW, SUM_HIGH, EVEN_COUNT, COUNT, LONG_COUNT, ERROR_AT = range(6)
STATE_SIZE = 6
NO_ERROR = -1
# The sum is SUM_HIGH * 2**60 + SUM_LOW with 0 <= SUM_LOW < 2**60: adding a number
# below 2**62 in magnitude can never overflow SUM_LOW's int64.
LOW_BITS = 60
LOW_MASK = (1 << LOW_BITS) - 1
# Numbers with more significant digits than this leave the kernel (10**18 < 2**60).
MAX_KERNEL_DIGITS = 18
# How many long numbers a scan records before it returns for Python to parse them.
LONG_CAPACITY = 1024
WINDOW = 64  # bytes per bitmask
NUMBER, LONG, INVALID = 0, 1, 2  # what a token is

_DIGITS = 0x0F0F0F0F0F0F0F0F  # an ASCII digit's value is its low nibble
# Masks that keep the values of the last k (0..16) digits of 16 bytes read as two words
# ending at a token's end: bytes before the token become 0, read as leading zeros.
_KEEP_LOW = np.array([_DIGITS & ~((1 << 8 * (8 - min(k, 8))) - 1) for k in range(17)], dtype=np.uint64)
_KEEP_HIGH = np.array([_DIGITS & ~((1 << 8 * (16 - max(k, 8))) - 1) for k in range(17)], dtype=np.uint64)
_EVEN_BYTES = np.uint64(0x00FF00FF00FF00FF)
_EVEN_SHORTS = np.uint64(0x0000FFFF0000FFFF)
# Multipliers that fold digit pairs, then pairs of pairs...: 10 * 2**8 + 1, 100 * 2**16 + 1,
# 10000 * 2**32 + 1; the high part of each product holds the folded values.
_FOLD_2, _FOLD_4, _FOLD_8 = np.uint64(2561), np.uint64(6553601), np.uint64(42949672960001)
_U1, _U8, _U16, _U32, _U63 = np.uint64(1), np.uint64(8), np.uint64(16), np.uint64(32), np.uint64(63)
_E8, _E16 = np.uint64(10**8), np.uint64(10**16)
SHORT = 10**16  # numbers below this add up per window without overflow


# The hot path reads through a raw address: helpers that took the array itself would
# make numba count references around every call (atomic operations and calls).
def _pointer(builder, address, element):
    return builder.inttoptr(address, element.as_pointer())


@intrinsic
def _address(typingctx, array):
    """Where ``array``'s data starts; valid while the caller holds the array."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))

    return types.int64(array), codegen


@intrinsic
def _load1(typingctx, address):
    """The byte at ``address``."""

    def codegen(context, builder, signature, args):
        return builder.load(_pointer(builder, args[0], ir.IntType(8)))

    return types.uint8(types.int64), codegen


@intrinsic
def _load8(typingctx, address):
    """The 8 bytes at ``address`` as a little-endian uint64 (unaligned)."""

    def codegen(context, builder, signature, args):
        return builder.load(_pointer(builder, args[0], ir.IntType(64)), align=1)

    return types.uint64(types.int64), codegen


@intrinsic
def _window_masks(typingctx, address):
    """Bitmasks of the 64 bytes at ``address`` (bit i for byte i): whitespace, bytes that
    are neither whitespace nor digits, and signs. LLVM makes each a few vector compares
    and a movemask."""

    def codegen(context, builder, signature, args):
        vector = ir.VectorType(ir.IntType(8), WINDOW)
        data = builder.load(_pointer(builder, args[0], vector), align=1)

        def is_byte(value):
            return builder.icmp_unsigned("==", data, ir.Constant(vector, [value] * WINDOW))

        def in_range(low, count):  # low <= byte < low + count, in one unsigned compare
            shifted = builder.sub(data, ir.Constant(vector, [low] * WINDOW))
            return builder.icmp_unsigned("<", shifted, ir.Constant(vector, [count] * WINDOW))

        space = builder.or_(is_byte(32), in_range(9, 5))  # space \t \n \v \f \r
        other = builder.not_(builder.or_(space, in_range(48, 10)))
        sign = builder.or_(is_byte(45), is_byte(43))
        masks = [builder.bitcast(mask, ir.IntType(WINDOW)) for mask in (space, other, sign)]
        return context.make_tuple(builder, signature.return_type, masks)

    return types.UniTuple(types.uint64, 3)(types.int64), codegen


@intrinsic
def _popcount(typingctx, word):
    """How many bits of ``word`` are set."""

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@numba.njit(inline="always")
def _is_space(byte):
    return byte == 32 or (byte >= 9 and byte <= 13)


@numba.njit(inline="always")
def _parse8(word):
    """Eight digit values (0..9 a byte, the first most significant) as a number."""
    word = (word * _FOLD_2) >> _U8
    word = ((word & _EVEN_BYTES) * _FOLD_4) >> _U16
    return ((word & _EVEN_SHORTS) * _FOLD_8) >> _U32


@numba.njit(inline="always")
def _parse16(address, count):
    """The ``count`` (0..16) digits that end at ``address`` (reads the 16 bytes before)."""
    low = _load8(address - 8) & _KEEP_LOW[count]
    high = _load8(address - 16) & _KEEP_HIGH[count]
    return _parse8(high) * _E8 + _parse8(low)


@numba.njit(inline="always")
def _add(low, high, signed):
    """(low, high) plus ``signed`` (|signed| < 2**62), carried so low stays in [0, 2**60)."""
    low += signed
    return low & LOW_MASK, high + (low >> LOW_BITS)  # >> floors, also for a negative low


@numba.njit(inline="always")
def _even_part(magnitude, negative):
    """The signed number if it is even, else 0; branch-free."""
    signed = -magnitude if negative else magnitude
    return signed & ((magnitude & 1) - 1)


@numba.njit
def _next_space(base, pos, size):
    """The first whitespace at or after ``pos``, or ``size``."""
    while pos < size and not _is_space(_load1(base + pos)):
        pos += 1
    return pos


@numba.njit
def _careful_token(base, start, end):
    """Byte by byte: (NUMBER | LONG | INVALID, magnitude, negative) of the token at
    offsets [start, end) from ``base``."""
    first = _load1(base + start)
    negative = first == 45
    at = start + (negative or first == 43)
    if at == end:
        return INVALID, 0, False
    magnitude = 0
    significant = 0
    for i in range(at, end):
        digit = np.int64(_load1(base + i)) - 48
        if digit < 0 or digit > 9:
            return INVALID, 0, False
        significant += significant > 0 or digit > 0
        if significant <= MAX_KERNEL_DIGITS:
            magnitude = magnitude * 10 + digit
    return (LONG if significant > MAX_KERNEL_DIGITS else NUMBER), magnitude, negative


@numba.njit(inline="always")
def _short_number(base, start, end):
    """(magnitude, negative) of the token at [start, end), known to be digits after an
    optional sign, with 24 readable bytes before ``end``; magnitude -1 unless it has
    1 to 18 digits."""
    first = _load1(base + start)
    negative = first == 45
    digits = end - start - (negative or first == 43)
    if digits < 1 or digits > MAX_KERNEL_DIGITS:
        return -1, negative
    if digits <= 16:
        return np.int64(_parse16(base + end, digits)), negative
    top = _parse8(_load8(base + end - 24) & _KEEP_LOW[digits - 16])
    return np.int64(top * _E16 + _parse16(base + end, 16)), negative


@numba.njit(inline="always")
def _fast_windows(base, pos, stop, size, low, high, evens, count):
    """Sum the tokens of whole windows from ``pos`` on, up to the first that needs care
    (an invalid byte near, over 18 digits...). Returns (the position before which every
    token is taken, the totals). Apart from the careful path, so the loop's state stays
    in registers."""
    window = pos
    resume = pos  # the end of the last token taken
    # A parse reads the 24 bytes before a token's end: they may not exist in the first.
    if window < 24 or window + 2 * WINDOW > size:
        return pos, low, high, evens, count
    spaces, others, signs = _window_masks(base + window)
    after_space = _U1  # bit 0: is the byte before the window whitespace?
    # Whole windows only, and not the last: a window's last token may end in the next.
    while window + WINDOW <= stop and window + 2 * WINDOW <= size:
        next_spaces, next_others, next_signs = _window_masks(base + window + WINDOW)
        words = ~spaces
        starts = words & ((spaces << _U1) | after_space)
        ends = words & ((spaces >> _U1) | (next_spaces << _U63))
        ends &= ends - (words & ~after_space & _U1)  # drop the end of the last window's token
        if others & ~(starts & signs):  # not only digits and leading signs
            return max(window, resume), low, high, evens, count
        tokens = _popcount(starts)
        window_sum = 0  # at most 33 numbers below SHORT: cannot overflow
        odds = 0
        while ends:
            start = window + np.int64(trailing_zeros(starts))
            starts &= starts - _U1
            end = window + np.int64(trailing_zeros(ends)) + 1
            ends &= ends - _U1
            magnitude, negative = _short_number(base, start, end)
            if magnitude < 0:
                taken = tokens - _popcount(starts) - 1
                low, high = _add(low, high, window_sum)
                return start, low, high, evens + taken - odds, count + taken
            if magnitude < SHORT:
                window_sum += _even_part(magnitude, negative)
            else:
                low, high = _add(low, high, _even_part(magnitude, negative))
            odds += magnitude & 1
            resume = end
        if starts:  # the last token runs on into the next window, to its first whitespace
            start = window + np.int64(trailing_zeros(starts))
            tail = trailing_zeros(next_spaces)
            end = window + WINDOW + np.int64(tail)
            magnitude, negative = _short_number(base, start, end)
            if next_spaces == 0 or next_others & ((_U1 << tail) - _U1) or magnitude < 0:
                low, high = _add(low, high, window_sum)
                return start, low, high, evens + tokens - 1 - odds, count + tokens - 1
            low, high = _add(low, high, _even_part(magnitude, negative))
            odds += magnitude & 1
            resume = end
        low, high = _add(low, high, window_sum)
        evens += tokens - odds
        count += tokens
        after_space = spaces >> _U63
        spaces, others, signs = next_spaces, next_others, next_signs
        window += WINDOW
    return max(window, resume), low, high, evens, count


@numba.njit(cache=True, nogil=True)
def scan(buf, pos, stop, state, longs):
    """Sum the numbers that start in ``buf[pos:stop]`` into ``state``; return where the
    scan stopped. ``pos`` must be at whitespace or a token's start; a token may run on
    past ``stop``, up to ``buf``'s end, which counts as whitespace.

    It stops early at an invalid token (its start in ``state[ERROR_AT]``) or when
    ``longs`` is full of the [start, end) of numbers over 18 digits, for Python to take."""
    base, size = _address(buf), buf.size
    stop = min(stop, size)
    low, high, evens, count = state[SUM_LOW], state[SUM_HIGH], state[EVEN_COUNT], state[COUNT]
    state[LONG_COUNT] = 0
    while True:  # fast windows, then one token byte by byte, and again
        pos, low, high, evens, count = _fast_windows(base, pos, stop, size, low, high, evens, count)
        while pos < stop and _is_space(_load1(base + pos)):
            pos += 1
        if pos >= stop:
            break
        start = pos
        pos = _next_space(base, start + 1, size)
        kind, magnitude, negative = _careful_token(base, start, pos)
        if kind == NUMBER:
            low, high = _add(low, high, _even_part(magnitude, negative))
            evens += 1 - (magnitude & 1)
            count += 1
        elif kind == INVALID:
            state[ERROR_AT] = start
            break
        else:
            longs[state[LONG_COUNT]] = start, pos
            state[LONG_COUNT] += 1
            if state[LONG_COUNT] == longs.shape[0]:
                break
    state[SUM_LOW], state[SUM_HIGH], state[EVEN_COUNT], state[COUNT] = low, high, evens, count
    return pos


@numba.njit(cache=True, nogil=True)
def next_space(buf, pos):
    """The first whitespace in ``buf`` at or after ``pos``, or ``buf.size``."""
    return _next_space(_address(buf), max(pos, 0), buf.size)
