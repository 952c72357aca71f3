"""Even sum through the API: upload and URL paths, progress, errors, exact results."""

import json
from pathlib import Path

import httpx
import pytest

from backend.core.job import Lane
from backend.core.kinds import EVEN_SUM
from backend.jobs.queue import JobQueue, QueuePolicy
from backend.jobs.store import JobStore, Submission
from compute.defaults import MAX_TOKEN_BYTES
from tests.waiting import wait_status, wait_until

NUMBERS = b" 12 -4\t7\r\n+8 0003\n\n99999999999999999999998 -0 5"  # evens: 12 -4 8 99999999999999999999998 -0
EXPECTED = {"sum": 12 - 4 + 8 + 99999999999999999999998, "even_count": 5, "count": 8, "bytes": len(NUMBERS)}


def upload(api_url: str, data: bytes, **headers) -> str:
    response = httpx.post(f"{api_url}/even-sum", content=data, headers={"Content-Type": "text/plain", **headers})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def result(api_url: str, token: str) -> dict:
    response = httpx.get(f"{api_url}/even-sum/{token}/result")
    assert response.status_code == 200, response.text
    return response.json()


def test_upload_then_sum_again_by_url(api_url, dispatcher, settings):
    kept = httpx.post(f"{api_url}/even-sum?keep_input=true", content=NUMBERS, headers={"Content-Type": "text/plain"})
    token = kept.json()["token"]
    assert wait_status(api_url, "even-sum", token)[-1] == {"status": "finished"}
    assert result(api_url, token) == EXPECTED

    stored = f"{settings.uploads_url}/{token}.txt"  # the record does not show the server's path
    assert Path(stored.removeprefix("file://")).read_bytes() == NUMBERS

    again = httpx.post(f"{api_url}/even-sum", json={"url": stored}).json()["token"]
    wait_status(api_url, "even-sum", again)
    assert result(api_url, again) == EXPECTED


def test_exact_beyond_64_bits_in_the_raw_response(api_url, dispatcher):
    token = upload(api_url, b"18446744073709551616 18446744073709551618")
    wait_status(api_url, "even-sum", token)
    raw = httpx.get(f"{api_url}/even-sum/{token}/result").text
    assert json.loads(raw)["sum"] == 36893488147419103234
    assert "36893488147419103234" in raw


def test_progress_is_recorded_per_block(api_url, dispatcher, settings):
    data = b"\n".join(str(i).encode() for i in range(20_000))  # ~110 KB, 1 KiB blocks
    token = upload(api_url, data)
    wait_status(api_url, "even-sum", token)
    blocks = -(-len(data) // settings.even_sum_block_bytes)
    assert httpx.get(f"{api_url}/tasks/{token}").json()["progress"] == {"done": blocks, "total": blocks}
    assert result(api_url, token)["sum"] == sum(range(0, 20_000, 2))


def test_status_shows_progress_while_running(api_url, redis, settings):
    store = JobStore(redis, settings.result_ttl_s)
    token = store.submit(Submission(EVEN_SUM, input_url=f"{settings.uploads_url}/x.txt")).token
    claim = JobQueue(redis, "d1", lease_s=10, policy=QueuePolicy.of(settings)).claim(Lane.bulk)
    store.progress(claim.job, 3, 8)
    body = httpx.get(f"{api_url}/even-sum/{token}/status").json()
    assert body == {"status": "received", "progress": {"done": 3, "total": 8}}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"1 2 12a 4", "invalid number at byte 4: '12a'"),
        (b"1\n3.5\n", "invalid number at byte 2: '3.5'"),
        (b"7 - 8", "invalid number at byte 2: '-'"),
        (b"1 2 \xff\xfe", "invalid number at byte 4"),
        (b"1 2 " + b"4" * (MAX_TOKEN_BYTES + 1) + b" 6", "the number at byte 4 is longer than 1048576 bytes: '4444"),
    ],
)
def test_invalid_content_errors_with_offset(api_url, dispatcher, data, message):
    token = upload(api_url, data)
    final = wait_status(api_url, "even-sum", token)[-1]
    assert final["status"] == "errored"
    assert message in final["error"]
    assert httpx.get(f"{api_url}/even-sum/{token}/result").json() == {"message": "not found"}


def test_a_missing_object_is_refused_with_400(api_url, settings):
    """Its size cannot be read, so it cannot be counted against the backlog quota (issue 17)."""
    url = f"{settings.uploads_url}/never-uploaded.txt"
    response = httpx.post(f"{api_url}/even-sum", json={"url": url})
    assert response.status_code == 400 and "cannot be read" in response.json()["error"]


def test_empty_file_sums_to_zero(api_url, dispatcher):
    token = upload(api_url, b" \n\t ")
    wait_status(api_url, "even-sum", token)
    assert result(api_url, token) == {"sum": 0, "even_count": 0, "count": 0, "bytes": 4}


def test_upload_over_the_limit_is_413_and_leaves_nothing(make_settings, start_api):
    settings = make_settings(max_upload_bytes=1000)
    api_url = start_api(settings)
    chunks = (b"2 " * 100 for _ in range(20))  # 4000 bytes, no Content-Length
    response = httpx.post(f"{api_url}/even-sum", content=chunks, headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    uploads = Path(settings.uploads_url.removeprefix("file://"))
    assert not uploads.exists() or not any(uploads.iterdir())


def test_even_sum_job_has_a_report(api_url, dispatcher):
    token = upload(api_url, NUMBERS)
    wait_status(api_url, "even-sum", token)
    record = wait_until(lambda: (r := httpx.get(f"{api_url}/tasks/{token}").json()).get("task_compute_s") and r)
    assert record["report_url"] == f"/tasks/{token}/report"
    assert record["bytes"] == len(NUMBERS)
    report = httpx.get(f"{api_url}/tasks/{token}/report", timeout=30)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert f"even-sum-{token}-0" in report.text  # its block task, in the task stream's data
    assert f"even-sum-{token}-reduce-0-0" in report.text  # and the combine task that ended it


def test_form_upload_is_refused_with_a_hint(api_url):
    response = httpx.post(f"{api_url}/even-sum", files={"file": ("numbers.txt", b"1 2 3")})
    assert response.status_code == 400
    assert "raw body" in response.json()["error"]
