"""`spacetime submit` against a live API: upload with progress, wait (?wait=), print the result."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from tests.paths import FIXTURES

# Each test runs `spacetime submit` as a process (a second or more of imports).
pytestmark = pytest.mark.slow


def submit(api_url: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend.run.cli", "submit", *args, "--api", api_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_submit_even_sum_file_then_url(api_url, settings, dispatcher, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("\n".join(str(i) for i in range(1, 5001)))
    done = submit(api_url, "even-sum", str(numbers), "--client-id", "cli", "--keep-input")
    assert done.returncode == 0, done.stderr
    expected = {"sum": sum(range(2, 5001, 2)), "even_count": 2500, "count": 5000, "bytes": numbers.stat().st_size}
    assert json.loads(done.stdout) == expected
    assert "upload" in done.stderr  # the progress bar

    token = done.stderr.split("token ")[1].split()[0]
    url = f"{settings.uploads_url}/{token}.txt"  # the upload's path, which the record does not show
    again = submit(api_url, "even-sum", url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == expected


def test_submit_randomize_writes_the_png(api_url, dispatcher, tmp_path):
    done = submit(api_url, "randomize", str(FIXTURES / "cat.png"), "-o", "shuffled.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "shuffled.png").size == Image.open(FIXTURES / "cat.png").size


def test_submit_reports_an_errored_job(api_url, dispatcher, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 x3")
    done = submit(api_url, "even-sum", str(bad))
    assert done.returncode == 1
    assert "invalid number at byte 4: 'x3'" in done.stderr


def test_submit_reports_a_refused_request(api_url, tmp_path):
    done = submit(api_url, "even-sum", "file:///etc/passwd")
    assert done.returncode == 1
    assert "error 400" in done.stderr and "not allowed" in done.stderr


def test_submit_says_what_is_missing(api_url, tmp_path):
    missing = submit(api_url, "randomize", str(tmp_path / "nope.png"))
    assert missing.returncode == 1 and "No such file" in missing.stderr
    unreachable = submit("http://127.0.0.1:9", "randomize", str(FIXTURES / "cat.png"))
    assert unreachable.returncode == 1 and "error:" in unreachable.stderr


def test_submit_gives_up_after_its_timeout(api_url):
    done = submit(api_url, "randomize", str(FIXTURES / "cat.png"), "--timeout", "0.5")  # no dispatcher: never ends
    assert done.returncode == 1
    assert "still requested after 0.5 s" in done.stderr and "/status" in done.stderr


def test_submit_polls_a_server_that_waits_less_than_it_asks(make_settings, start_api, dispatcher, tmp_path):
    api_url = start_api(make_settings(max_status_wait_s=0.5))  # the client asks for 5 s: a 400
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("2 4 5")
    done = submit(api_url, "even-sum", str(numbers))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sum"] == 6
