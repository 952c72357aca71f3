"""Number files for the even-sum tests: the plain-Python answer to compare with, and
Hypothesis strategies for valid and invalid files."""

import re
from pathlib import Path

from hypothesis import strategies as st

from compute import local_read
from compute.defaults import MAX_TOKEN_BYTES
from compute.errors import InvalidNumber, NumberTooLong


def recorded_mappings(monkeypatch) -> list[tuple[int, int]]:
    """The [start, end) of every mapping local blocks make from now on (compute/local_read.py
    ``mapped``, which still maps them)."""
    spans: list[tuple[int, int]] = []
    map_pages = local_read.mapped

    def mapped(fd: int, start: int, end: int):
        spans.append((start, end))
        return map_pages(fd, start, end)

    monkeypatch.setattr(local_read, "mapped", mapped)
    return spans


def another_store(path: Path) -> tuple[str, dict]:
    """The URL and storage options of ``path`` as a file of a store other than the local
    file system (fsspec's dir:// over its folder): a block of it is read into the thread's
    buffer (compute/local_read.py), where a local file is mapped."""
    return f"dir://{path.name}", {"path": str(path.parent), "target_protocol": "file"}


WHITESPACE = [b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"\r\n"]


VALID_TOKEN = re.compile(rb"[+-]?[0-9]+")


TOKEN = re.compile(rb"[^ \t\n\r\x0b\x0c]+")


INVALID_TOKENS = [
    b"12a",
    b"3.5",
    b"1e5",
    b"NaN",
    b"-",
    b"+",
    b"--1",
    b"+-2",
    b"1-2",
    b"0x10",
    b"1_000",
    b"\x00",
    b"\xff\xfe",
    "é".encode(),
    "١٢".encode(),
    b"\x1c",
    b"12" * 30 + b"!",
]


def reference(data: bytes, max_token_bytes: int = MAX_TOKEN_BYTES) -> dict:
    """The expected result, or the InvalidNumber of the first bad token: one longer than
    ``max_token_bytes`` (NumberTooLong, whatever its bytes), or not an integer."""
    total = evens = count = 0
    for match in TOKEN.finditer(data):
        token = match.group()
        text = token[:40].decode("ascii", "replace") + ("..." if len(token) > 40 else "")
        if len(token) > max_token_bytes:
            raise NumberTooLong(match.start(), text, max_token_bytes)
        if not VALID_TOKEN.fullmatch(token):
            raise InvalidNumber(match.start(), text)
        value = _int(token)
        count += 1
        if value % 2 == 0:
            total += value
            evens += 1
    return {"sum": total, "even_count": evens, "count": count, "bytes": len(data)}


def _int(token: bytes) -> int:
    """int(token) by chunks: int() alone refuses over 4300 digits."""
    digits = token.lstrip(b"+-")
    value = 0
    for i in range(0, len(digits), 1000):
        chunk = digits[i : i + 1000]
        value = value * 10 ** len(chunk) + int(chunk)
    return -value if token.startswith(b"-") else value


def expect(data: bytes, max_token_bytes: int = MAX_TOKEN_BYTES):
    """reference(data), or the exception it raises, to compare with."""
    try:
        return reference(data, max_token_bytes)
    except InvalidNumber as exc:
        return exc


@st.composite
def integer_tokens(draw) -> bytes:
    """Integers in the forms a file may hold: mostly short (the kernel's fast path), some
    long (its careful path, Python's), signs, leading zeros."""
    digits = draw(st.sampled_from([1, 2, 3, 5, 7, 8, 9, 10, 12, 15, 16] * 4 + [17, 18, 19, 20, 40]))
    magnitude = draw(st.integers(0, 10**digits - 1))
    sign = draw(st.sampled_from([b"", b"", b"-", b"+"]))
    zeros = b"0" * draw(st.sampled_from([0] * 12 + [1, 3, 20]))
    return sign + zeros + str(magnitude).encode()


@st.composite
def number_files(draw, invalid: bool = False, max_tokens: int = 60) -> bytes:
    """Whole files: tokens between runs of any whitespace, optional leading and trailing
    whitespace; with ``invalid``, some bad tokens among them. Repeated up to 20 times,
    so that files also run to the hundreds of bytes the kernel's fast path needs."""
    token = integer_tokens()
    if invalid:
        token = st.one_of(token, st.sampled_from(INVALID_TOKENS))
    tokens = draw(st.lists(token, max_size=max_tokens))
    if invalid:
        tokens.insert(draw(st.integers(0, len(tokens))), draw(st.sampled_from(INVALID_TOKENS)))
    gaps = st.lists(st.sampled_from(WHITESPACE), min_size=1, max_size=3).map(b"".join)
    edge = st.lists(st.sampled_from(WHITESPACE), max_size=3).map(b"".join)
    parts = []
    for value in tokens:
        parts.append(value)
        parts.append(draw(gaps))
    body = b"".join(parts) * draw(st.sampled_from([1, 2, 3, 7, 20]))
    return draw(edge) + body.rstrip(b" \t\n\r\x0b\x0c") + draw(edge)
