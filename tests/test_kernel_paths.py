"""Every kernel path this CPU runs (compute/kernel.py) against a plain Python parse.

Random texts of the shapes that matter, each also with one byte broken (the same error,
at the same offset); and buffers placed against pages that may not be read, so that a
read outside the buffer kills the run. The paths this CPU lacks are skipped, with the
reason (``pytest -rs`` lists them).
"""

import ctypes
import mmap
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from compute import even_sum, kernel
from compute.errors import InvalidNumber
from tests.number_files import expect

WHITESPACE = b" \t\n\r\x0b\x0c"
TEXTS_PER_SHAPE = 150


@pytest.fixture(params=kernel.PATHS)
def path(request, monkeypatch) -> str:
    """Run the even-sum code on this kernel path (``even_sum`` looks ``kernel.scan`` up per call)."""
    if request.param not in kernel.available():
        pytest.skip(f"no {request.param} kernel on this CPU or build (it runs {', '.join(kernel.available())})")
    monkeypatch.setattr(kernel, "scan", kernel.scan_on(request.param))
    return request.param


def outcome(data) -> dict | tuple[int, str]:
    """sum_bytes's result, or the offset and text of the invalid number it raises."""
    try:
        return even_sum.sum_bytes(data)
    except InvalidNumber as exc:
        return exc.offset, exc.text


def wanted(data: bytes) -> dict | tuple[int, str]:
    answer = expect(data)
    return (answer.offset, answer.text) if isinstance(answer, InvalidNumber) else answer


# --- texts ----------------------------------------------------------------------------


def lines(rng: random.Random) -> bytes:
    """One number per line, as the bench's files."""
    return b"".join(b"%d\n" % rng.randrange(2**31) for _ in range(rng.randrange(1, 600)))


def mixed(rng: random.Random) -> bytes:
    """Signed numbers of 1 to 18 digits between runs of any whitespace."""
    parts = []
    for _ in range(rng.randrange(1, 400)):
        parts.append(rng.choice([b"", b"-", b"+"]) + b"%d" % rng.randrange(10 ** rng.randrange(1, 19)))
        parts.append(bytes(rng.choices(WHITESPACE, k=rng.randrange(1, 4))))
    return bytes(rng.choices(WHITESPACE, k=rng.randrange(3))) + b"".join(parts)


def long_and_zeros(rng: random.Random) -> bytes:
    """1 to 40 digits, some with leading zeros: the careful path and Python's."""
    parts = []
    for _ in range(rng.randrange(1, 200)):
        zeros = b"0" * rng.choice([0, 0, 0, 1, 5, 20])
        number = b"%d" % rng.randrange(10 ** rng.randrange(1, 41))
        parts.append(rng.choice([b"", b"-"]) + zeros + number)
    return b" ".join(parts)


def soup(rng: random.Random) -> bytes:
    """Mostly numbers of every length (leading zeros, signs), now and then a lone sign or
    any byte: tokens of every kind cut at windows' ends, the fast and careful paths mixed."""
    parts = []
    for _ in range(rng.randrange(1, 300)):
        if rng.random() < 0.01:
            parts.append(rng.choice([bytes([rng.randrange(256)]), b"-", b"+", b"+-1", b"1-"]))
        else:
            zeros = b"0" * rng.choice([0] * 20 + [1, 3, 10, 19])
            digits = rng.choice([1, 2, 5, 9, 10, 11, 17, 18] * 6 + [19, 20, 25, 40])
            number = b"%d" % rng.randrange(10 ** (digits - 1), 10**digits)
            parts.append(rng.choice([b"", b"", b"-", b"+"]) + zeros + number)
        parts.append(bytes(rng.choices(WHITESPACE, k=rng.choice([1, 1, 1, 2, 3]))))
    return b"".join(parts)


def tiny(rng: random.Random) -> bytes:
    return b" ".join(b"%d" % rng.randrange(-100, 100) for _ in range(rng.randrange(4)))


SHAPES = [lines, mixed, long_and_zeros, soup, tiny]


def broken(rng: random.Random, data: bytes) -> bytes:
    """``data`` with one byte replaced by any other byte."""
    if not data:
        return bytes([rng.randrange(256)])
    at = rng.randrange(len(data))
    return data[:at] + bytes([rng.choice([b for b in range(256) if b != data[at]])]) + data[at + 1 :]


def texts(shape: Callable, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(TEXTS_PER_SHAPE):
        data = shape(rng)
        yield data
        yield broken(rng, data)


# --- buffers against guard pages ------------------------------------------------------

PAGE = mmap.PAGESIZE
PROT_NONE = 0  # mmap has PROT_READ and PROT_WRITE, not this
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


@contextmanager
def guarded(data: bytes, at_end: bool) -> Iterator[np.ndarray]:
    """``data`` in memory right before a page that may not be read (``at_end``), or right
    after one; a read past the buffer's edge is a segmentation fault."""
    pages = max(1, -(-len(data) // PAGE))
    size = (pages + 2) * PAGE  # guard, data, guard
    address = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        for guard in (address, address + (pages + 1) * PAGE):
            assert _libc.mprotect(guard, PAGE, PROT_NONE) == 0, os.strerror(ctypes.get_errno())
        start = address + PAGE + (pages * PAGE - len(data) if at_end else 0)
        ctypes.memmove(start, data, len(data))
        view = np.frombuffer((ctypes.c_uint8 * len(data)).from_address(start), dtype=np.uint8)
        view.flags.writeable = False
        yield view
        del view
    finally:
        _libc.munmap(address, size)


# --- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
def test_every_path_sums_and_fails_like_python(path, shape):
    for data in texts(shape, seed=SHAPES.index(shape)):
        assert outcome(data) == wanted(data), data[:200]


@pytest.mark.parametrize("at_end", [True, False], ids=["before a guard page", "after a guard page"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
def test_no_path_reads_outside_the_buffer(path, shape, at_end):
    for i, data in enumerate(texts(shape, seed=100 + SHAPES.index(shape))):
        if i % 5:  # a fifth of them: a mapping each
            continue
        with guarded(data, at_end) as buf:
            assert outcome(buf) == wanted(data), data[:200]


@pytest.mark.parametrize("length", range(0, 200, 7))
def test_a_number_touching_both_guard_pages(path, length):
    """Texts of every length around a window's, all digits to the edges."""
    data = b"8" * (length % 19) + (b" 12" * length)[: length - length % 19]
    for at_end in (True, False):
        with guarded(data, at_end) as buf:
            assert outcome(buf) == wanted(data)


CUT_TOKENS = [
    b"7",
    b"-8",
    b"+12",
    b"-1234567890",
    b"12345678901",
    b"-999999999999999998",
    b"1234567890123456789",
    b"-1234567890123456789",
    b"-123456789012345678901234",
    b"+00000000000000000001",
    b"00000000000000000001",
    b"-",
    b"12x",
    b"1-2",
    b"+-3",
]


@pytest.mark.parametrize("token", CUT_TOKENS, ids=lambda token: token.decode())
def test_a_token_at_every_place_of_two_windows(path, token):
    """The SIMD paths cut tokens at windows 64 bytes apart and carry them into the next:
    a token (valid or not) at every place around two windows' ends, after whole tokens or
    whitespace, the same sum or error as Python."""
    for shift in range(150):
        for before in ((b"36 " * 60)[:shift], b"\t" * shift):
            data = before + b" " + token + b"\n" + b"-4 8\n" * 40
            assert outcome(data) == wanted(data), (shift, data[:200])


def test_sums_past_64_bits_by_exponent_are_exact(path):
    """Many 18-digit numbers: the byte counters flush many times, the sum needs 128 bits."""
    data = (b"999999999999999998 -888888888888888888\n" * 3 + b"+777777777777777776 ") * 3000
    assert outcome(data) == wanted(data)


@pytest.mark.parametrize("setting, expected", [("portable", "portable"), ("AUTO", None), ("sse9", "error")])
def test_the_setting_forces_a_path(setting, expected):
    done = subprocess.run(
        [sys.executable, "-c", "from compute import kernel; print(kernel.PATH)"],
        env={**os.environ, kernel.SETTING: setting},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if expected == "error":
        assert done.returncode != 0
        assert "SPACETIME_KERNEL='sse9'" in done.stderr
    else:
        assert done.stdout.strip() == (expected or kernel.available()[0]), done.stderr


def test_every_path_stops_and_fills_the_state_as_the_numba_kernel(path):
    """scan itself, from and to any place, with a list of long numbers that fills up:
    the same returned position, state and long numbers as the portable path."""
    rng = random.Random(7)
    for _ in range(1000):
        data = rng.choice(SHAPES)(rng) * rng.randrange(1, 4)  # repeated: more tokens cut at windows' ends
        if rng.random() < 0.3:
            data = broken(rng, data)
        buf = np.frombuffer(data, dtype=np.uint8)
        starts = [i for i in range(len(data) + 1) if i == 0 or data[i - 1] in WHITESPACE]
        pos = rng.choice(starts)
        stop = rng.randrange(pos, len(data) + 2)
        answers = []
        for scan in (kernel.scan_on(kernel.PORTABLE), kernel.scan):
            state = np.zeros(kernel.STATE_SIZE, dtype=np.int64)
            state[kernel.ERROR_AT] = kernel.NO_ERROR
            longs = np.zeros((3, 2), dtype=np.int64)
            end = scan(buf, pos, stop, state, longs)
            answers.append((end, state.tolist(), longs[: state[kernel.LONG_COUNT]].tolist()))
        assert answers[0] == answers[1], (pos, stop, data[:200])
