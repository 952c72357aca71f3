"""sum_bytes, the kernel on a whole buffer, against plain Python on every input format."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import InvalidNumber
from compute.even_sum import sum_bytes
from tests.number_files import INVALID_TOKENS, expect, number_files, reference


def check(data: bytes) -> None:
    wanted = expect(data)
    if isinstance(wanted, InvalidNumber):
        with pytest.raises(InvalidNumber) as raised:
            sum_bytes(data)
        assert (raised.value.offset, raised.value.text) == (wanted.offset, wanted.text)
        assert f"byte {wanted.offset}" in str(raised.value)
    else:
        assert sum_bytes(data) == wanted


# Short numbers first and 0-63 spaces: the file starts at any place in a window of the
# kernel's fast path, which is running by then.
lead_ins = st.tuples(st.sampled_from([b"", b"1 " * 80]), st.integers(0, 63)).map(lambda t: t[0] + b" " * t[1])


@settings(max_examples=300, deadline=None)
@given(lead_ins, number_files())
def test_valid_files_sum_like_python(lead_in, data):
    check(lead_in + data)


@settings(max_examples=300, deadline=None)
@given(lead_ins, number_files(invalid=True))
def test_the_first_invalid_token_is_reported_with_its_offset(lead_in, data):
    check(lead_in + data)


@given(st.binary(max_size=300))
def test_any_bytes_give_the_python_answer_or_its_error(data):
    check(data)


@pytest.mark.parametrize(
    "data, total",
    [
        (b"", 0),
        (b" \t\r\n\x0b\x0c ", 0),
        (b"2", 2),
        (b"-0", 0),
        (b"-12 +4 0007\r\n", -8),
        (b"18446744073709551616 -18446744073709551618", -2),  # past 64 bits
        (b"9" * 18 + b"8 " + b"1" * 19, int(b"9" * 18 + b"8")),
        (b"123456789012345678", 123456789012345678),  # 18 digits: the kernel's limit
        (b"0" * 30 + b"4", 4),  # long text, small number
    ],
)
def test_edge_cases(data, total):
    assert sum_bytes(data)["sum"] == total
    assert sum_bytes(data) == reference(data)


def test_numbers_past_pythons_digit_limit_are_exact():
    big = b"8" * 10_000  # int() refuses strings over 4300 digits
    assert sum_bytes(b"1 " + big + b" -" + big)["sum"] == 0
    assert sum_bytes(big)["sum"] == 8 * (10**10_000 - 1) // 9


def test_a_long_file_of_short_numbers_takes_the_fast_path_exactly():
    """A million numbers of 1 to 16 digits, signed, through the whole-window path."""
    rng = np.random.default_rng(7)
    digits = rng.integers(1, 17, 1_000_000)
    values = rng.integers(0, 10**digits, dtype=np.int64) * rng.choice([-1, 1], digits.size)
    data = b" ".join(b"%d" % v for v in values) + b"\n"
    even = values[values % 2 == 0]
    assert sum_bytes(data) == {
        "sum": int(even.sum(dtype=object)),
        "even_count": even.size,
        "count": values.size,
        "bytes": len(data),
    }


def test_many_long_numbers_fill_and_drain_the_kernels_list():
    data = b" ".join([b"2" * 25, b"3" * 25] * 1500)  # over LONG_CAPACITY long numbers
    assert sum_bytes(data) == reference(data)


@pytest.mark.parametrize("token", INVALID_TOKENS)
def test_an_invalid_token_is_found_at_every_place_in_a_window(token):
    """The kernel works on 64-byte windows: put the token at each of 64 offsets."""
    for shift in range(64):
        data = b"12 " * 100 + b" " * shift + token + b" -4" * 100
        with pytest.raises(InvalidNumber) as raised:
            sum_bytes(data)
        assert (raised.value.offset, raised.value.text) == (300 + shift, expect(data).text)


@pytest.mark.parametrize(
    "token", [b"1", b"-22", b"+4", b"1234567", b"-12345678", b"1" * 16, b"8" * 17, b"-" + b"6" * 18, b"2" * 30]
)
def test_a_number_is_summed_at_every_place_in_a_window(token):
    for shift in range(64):
        data = b"1 " * 100 + b"\n" * shift + token + b"\t" + b"-20 " * 100
        assert sum_bytes(data) == reference(data)


def test_an_invalid_token_is_shown_whole_but_cut_at_40_chars():
    with pytest.raises(InvalidNumber, match=r"byte 2: '1234567890123456789012345678901234567890\.\.\.'"):
        sum_bytes(b"1 " + b"1234567890" * 5 + b"x")


def test_sum_bytes_takes_memoryview_and_numpy():
    data = b"2 4 5"
    assert sum_bytes(memoryview(data)) == sum_bytes(np.frombuffer(data, np.uint8)) == reference(data)
