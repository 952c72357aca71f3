"""The seed's curl flow and its error cases, through a live uvicorn and real dispatchers."""

import io
import re
import sys

import httpx
import numpy as np
from PIL import Image

from backend.core.job import Lane
from backend.dispatch.dispatcher import Dispatcher
from backend.jobs import keys
from tests.dask_probes import scheduler_tasks
from tests.images import tiles
from tests.waiting import wait_status

BLOCK = 60


def test_seed_flow_shuffles_the_cat(api_url, settings, dask_client, cat_png):
    response = httpx.post(f"{api_url}/randomize", content=cat_png, headers={"Content-Type": "image/png"})
    assert response.status_code == 201
    token = response.json()["token"]
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    assert httpx.get(f"{api_url}/randomize/{token}/status").json() == {"status": "requested"}
    assert httpx.get(f"{api_url}/randomize/{token}/result").status_code == 404

    dispatcher = Dispatcher(settings, dask_client)
    dispatcher.start()
    try:
        seen = [body["status"] for body in wait_status(api_url, "randomize", token)]
    finally:
        dispatcher.stop()
    assert seen[-1] == "finished"
    assert seen == [s for s in ("requested", "received", "finished") if s in seen]

    result = httpx.get(f"{api_url}/randomize/{token}/result")
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/png"
    before = Image.open(io.BytesIO(cat_png))
    after = Image.open(io.BytesIO(result.content))
    assert (after.size, after.mode) == (before.size, before.mode)
    a, b = np.asarray(before), np.asarray(after)
    assert tiles(a, BLOCK) == tiles(b, BLOCK)
    assert not np.array_equal(a, b)
    rows, cols = (a.shape[0] // BLOCK) * BLOCK, (a.shape[1] // BLOCK) * BLOCK
    assert np.array_equal(a[rows:], b[rows:]) and np.array_equal(a[:, cols:], b[:, cols:])

    record = httpx.get(f"{api_url}/tasks/{token}").json()
    assert record["kind"] == "randomize" and record["client"] == "anonymous"
    assert record["requested_at"] <= record["received_at"] <= record["finished_at"]


def test_received_is_visible_while_a_dispatcher_holds_the_job(api_url, settings, dask_client, cat_png):
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    dispatcher = Dispatcher(settings, dask_client)
    claim = dispatcher.queue.claim(Lane.interactive)
    assert claim.job.token == token and claim.job.status == "received"
    assert httpx.get(f"{api_url}/randomize/{token}/status").json() == {"status": "received"}


def test_client_id_is_recorded(api_url, dispatcher, cat_png):
    headers = {"X-Client-Id": "notebook-7"}
    token = httpx.post(f"{api_url}/randomize", content=cat_png, headers=headers).json()["token"]
    wait_status(api_url, "randomize", token, headers=headers)
    assert httpx.get(f"{api_url}/tasks/{token}", headers=headers).json()["client"] == "notebook-7"


def test_not_png_is_400(api_url):
    response = httpx.post(f"{api_url}/randomize", content=b"GIF89a...", headers={"Content-Type": "image/png"})
    assert response.status_code == 400
    assert "not a PNG" in response.json()["error"]


def test_corrupt_png_errors_with_a_message(api_url, dispatcher, cat_png):
    corrupt = cat_png[:100] + b"\x00" * 500 + cat_png[600:]
    token = httpx.post(f"{api_url}/randomize", content=corrupt).json()["token"]
    final = wait_status(api_url, "randomize", token)[-1]
    assert final["status"] == "errored"
    assert "corrupt PNG" in final["error"]
    assert httpx.get(f"{api_url}/randomize/{token}/result").json() == {"message": "not found"}


def test_decompression_bomb_errors(api_url, make_settings, start_dispatcher):
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buffer, "PNG")  # 9 MP of zeros: a tiny file
    start_dispatcher(make_settings(max_image_pixels=1_000_000))
    token = httpx.post(f"{api_url}/randomize", content=buffer.getvalue()).json()["token"]
    final = wait_status(api_url, "randomize", token)[-1]
    assert final["status"] == "errored"
    assert "image too large: 3000x3000" in final["error"]


def test_an_expired_input_errors_with_a_message(api_url, redis, settings, start_dispatcher, cat_png):
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    redis.delete(keys.input_(token))  # as its TTL would
    start_dispatcher(settings)
    final = wait_status(api_url, "randomize", token)[-1]
    assert final == {"status": "errored", "error": "the uploaded image has expired; submit it again"}


def test_the_png_travels_through_neither_the_scheduler_nor_the_dispatcher(
    api_url, settings, cluster, start_dispatcher, cat_png
):
    """The worker task reads the PNG from Redis and stores its result there: the scheduler
    holds a task spec and a result of a few hundred bytes, not the image's ~350 KB and
    the shuffled image's ~450 KB (what it held when the bytes went through it)."""
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    with scheduler_tasks(cluster.scheduler, f"randomize-{token}") as seen:
        start_dispatcher(settings)
        assert wait_status(api_url, "randomize", token)[-1] == {"status": "finished"}
    result = httpx.get(f"{api_url}/randomize/{token}/result").content
    assert result.startswith(b"\x89PNG") and len(result) > 100_000
    [spec] = seen.specs.values()  # one task, one attempt
    assert cat_png[:1000] not in spec and len(spec) < 2_000 and b"randomize_stored" in spec
    assert list(seen.result_bytes.values()) == [sys.getsizeof(None)]  # nothing: the result is in Redis


def test_too_large_is_413(make_settings, start_api, cat_png):
    api_url = start_api(make_settings(max_image_bytes=1000))
    response = httpx.post(f"{api_url}/randomize", content=cat_png)
    assert response.status_code == 413
    assert "limit of 1000 bytes" in response.json()["error"]


def test_too_large_without_length_is_413(make_settings, start_api, cat_png):
    api_url = start_api(make_settings(max_image_bytes=1000))
    chunks = (cat_png[i : i + 500] for i in range(0, len(cat_png), 500))
    response = httpx.post(f"{api_url}/randomize", content=chunks)
    assert response.status_code == 413


def test_unknown_token_is_404(api_url):
    for path in ("/randomize/0123/status", "/randomize/0123/result", "/tasks/0123", "/tasks/0123/report"):
        response = httpx.get(api_url + path)
        assert response.status_code == 404, path
        assert response.json() == {"message": "not found"}


def test_token_of_another_kind_is_404(api_url, cat_png):
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    assert httpx.get(f"{api_url}/even-sum/{token}/status").status_code == 404


def test_unknown_kind_queued_by_hand_errors(api_url, redis, dispatcher):
    redis.set(keys.result("f" * 32), '{"token": "' + "f" * 32 + '", "kind": "resize", "status": "requested"}', ex=60)
    redis.lpush(keys.TASKS, "f" * 32)
    record = _wait_record(api_url, "f" * 32)
    assert record["status"] == "errored"
    assert "unknown job kind 'resize'" in record["error"]
    assert record["exec_s"] >= 0  # it has a timing record all the same


def test_unreadable_record_errors(api_url, redis, dispatcher):
    redis.set(keys.result("e" * 32), b"\x80\x04pickle?", ex=60)
    redis.lpush(keys.TASKS, "e" * 32)
    record = _wait_record(api_url, "e" * 32)
    assert record["status"] == "errored"
    assert "not readable" in record["error"]


def _wait_record(api_url: str, token: str) -> dict:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        record = httpx.get(f"{api_url}/tasks/{token}").json()
        if record.get("status") in ("finished", "errored"):
            return record
        time.sleep(0.02)
    raise AssertionError(f"{token} never ended: {record}")
