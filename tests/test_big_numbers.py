"""Numbers and sums past Python's 4300-digit str/int limit stay exact end to end:
worker, Redis record, the JSON result and `spacetime submit`."""

import subprocess
import sys

import httpx
import pytest

from compute.digits import digits_value, int_text, json_ints
from tests.waiting import wait_status

# Python refuses str(int) and int(str) past this many digits (sys.get_int_max_str_digits).
PYTHON_LIMIT_DIGITS = 4300


def upload(api_url: str, data: bytes) -> str:
    response = httpx.post(f"{api_url}/even-sum", content=data, headers={"Content-Type": "text/plain"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def expected_json(total: int, even_count: int, count: int, nbytes: int) -> str:
    return f'{{"sum": {int_text(total)}, "even_count": {even_count}, "count": {count}, "bytes": {nbytes}}}'


@pytest.mark.parametrize("digits", [1, 4000, 4300, 4301, 9000, 30_001])
def test_digits_round_trip_past_the_limit(digits):
    text = "7" + "0123456789" * (digits // 10) + "8" * (digits % 10)
    text = text[:digits]
    value = digits_value(text.encode())
    assert int_text(value) == text
    assert int_text(-value) == "-" + text
    assert value % 10**6 == int(text[-6:])


def test_int_text_of_small_numbers_is_str():
    for value in (0, 1, -1, 10**18, -(2**64), 10**PYTHON_LIMIT_DIGITS - 1):
        assert int_text(value) == str(value)


def test_json_ints_writes_what_json_dumps_writes():
    assert json_ints({"sum": -12, "count": 3}) == '{"sum": -12, "count": 3}'


def test_a_5000_digit_number_is_summed_exactly(api_url, dispatcher):
    number = b"8" * 5000
    token = upload(api_url, number + b"\n")
    assert wait_status(api_url, "even-sum", token)[-1] == {"status": "finished"}
    raw = httpx.get(f"{api_url}/even-sum/{token}/result").text
    assert raw == expected_json(digits_value(number), 1, 1, 5001)


def test_a_sum_past_the_limit_is_exact(api_url, dispatcher):
    a, b = b"9" * 4400, b"8" + b"6" * 4399
    token = upload(api_url, a[:-1] + b"8 " + b)
    assert wait_status(api_url, "even-sum", token)[-1] == {"status": "finished"}
    raw = httpx.get(f"{api_url}/even-sum/{token}/result").text
    total = digits_value(a[:-1] + b"8") + digits_value(b)
    assert len(int_text(total)) == 4401
    assert raw == expected_json(total, 2, 2, 8801)


@pytest.mark.slow
def test_submit_prints_a_big_sum_exactly(api_url, dispatcher, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("8" * 5000 + " 2\n")
    done = subprocess.run(
        [sys.executable, "-m", "backend.run.cli", "submit", "even-sum", str(numbers), "--api", api_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    total = digits_value(b"8" * 5000) + 2
    assert done.stdout.strip() == expected_json(total, 2, 2, 5003)
