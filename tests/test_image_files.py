"""Large images kept as files in the uploads store, not in Redis (settings.image_file_bytes),
with a live API, Redis, dispatcher and Dask: the bytes never enter Redis (nor its AOF), yet
count against their client's held bytes exactly as they would there; every file is
deleted when nothing needs it any more (its job's end, its result's expiry, a refusal, a
crash before its job was stored); and reruns, cancels and results work as for any image.

Here the threshold is set under cat.png's output bound (1.6 MB), so cat.png goes to files."""

import io
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from backend.jobs import keys
from backend.jobs.doctor import Doctor
from backend.jobs.store import JobStore
from compute.files import write_file
from compute.png import output_bound
from tests.held_bytes import cost_of, held_for
from tests.images import tiles
from tests.moto_s3 import REGION, moto_server, new_bucket, s3_client
from tests.waiting import wait_status, wait_until

# Under cat.png's output bound: cat.png is kept as files.
IMAGE_FILE_BYTES = 100_000


def post(api: str, client: str, png: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{api}/randomize", content=png, headers={"X-Client-Id": client, **headers}, timeout=30)


def image_files(settings) -> list[Path]:
    return sorted((settings.data_dir / "uploads" / "images").glob("*"))


def finished(api: str, client: str, token: str) -> None:
    final = wait_status(api, "randomize", token, headers={"X-Client-Id": client})[-1]
    assert final["status"] == "finished", final


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_a_large_image_is_kept_as_files_and_counts_against_its_client(
    make_settings, start_api, start_dispatcher, redis, cat_png
):
    """Queued, its input is a file (no input key in Redis) held at its size with room for
    its output; finished, its output is a file (no output key), its input file is gone,
    and the output counts against its client as long as it is kept: the client's next
    image is refused (429) while another client's is served. The client sees no path."""
    held = held_for(redis, cat_png, as_file=True)
    settings = make_settings(image_file_bytes=IMAGE_FILE_BYTES, default_max_held_bytes=held + 100_000)
    api = start_api(settings)
    token = post(api, "a", cat_png).json()["token"]
    job = JobStore(redis, 60).get(token)
    assert job.input_url == f"{settings.uploads_url}/images/{token}.png" and job.delete_input
    assert [path.name for path in image_files(settings)] == [f"{token}.png"]
    assert image_files(settings)[0].read_bytes() == cat_png
    assert not redis.exists(keys.input_(token))
    assert int(redis.hget(keys.HELD_BYTES, "a")) == held
    assert redis.zcard(keys.IMAGE_FILES) == 0  # its record holds it now

    start_dispatcher(settings)
    finished(api, "a", token)
    output = httpx.get(f"{api}/randomize/{token}/result", headers={"X-Client-Id": "a"})
    assert output.status_code == 200 and output.headers["content-type"] == "image/png"
    assert len(output.content) <= output_bound(cat_png)
    assert tiles(pixels(output.content), 60) == tiles(pixels(cat_png), 60)
    job = JobStore(redis, 60).get(token)
    assert job.output_bytes == len(output.content)
    output_file = Path(job.output_url.removeprefix("file://"))
    wait_until(lambda: image_files(settings) == [output_file], timeout_s=10, what="the input file to be deleted")
    assert not redis.exists(keys.output(token))
    expires = redis.zscore(keys.IMAGE_FILES, job.output_url)
    assert abs(expires - (time.time() + settings.result_ttl_s)) < 60
    # The output at what the scripts count for its size, with its record (a few hundred bytes).
    record = int(redis.hget(keys.HELD_BYTES, "a")) - cost_of(redis, len(output.content)) - keys.HELD_ENTRY_BYTES
    assert 0 < record < 4096

    refused = post(api, "a", cat_png)
    assert refused.status_code == 429 and "holds" in refused.json()["error"]
    assert refused.headers["Retry-After"]
    other = post(api, "b", cat_png)
    assert other.status_code == 201
    finished(api, "b", other.json()["token"])
    shown = httpx.get(f"{api}/tasks/{token}", headers={"X-Client-Id": "a"}).json()
    assert "input_url" not in shown and "output_url" not in shown and "images/" not in str(shown)
    assert Doctor(redis).check() == []


def test_an_image_file_goes_with_its_result(make_settings, start_api, start_dispatcher, redis, cat_png):
    """Past the result's TTL, the record expires in Redis and a dispatcher's sweep (at its
    heartbeat's pace) deletes its output file; the client's held bytes come back to nothing."""
    settings = make_settings(image_file_bytes=IMAGE_FILE_BYTES, result_ttl_s=2)
    api = start_api(settings)
    start_dispatcher(settings)
    token = post(api, "a", cat_png).json()["token"]
    finished(api, "a", token)
    assert len(image_files(settings)) == 1
    wait_until(lambda: not image_files(settings), timeout_s=20, what="the output file to be deleted")
    assert redis.zcard(keys.IMAGE_FILES) == 0
    assert httpx.get(f"{api}/randomize/{token}/result", headers={"X-Client-Id": "a"}).status_code == 404
    assert Doctor(redis).check() == []
    assert int(redis.hget(keys.HELD_BYTES, "a") or 0) == 0


def test_files_that_no_job_took_are_deleted_when_due(make_settings, start_dispatcher, redis, cat_png):
    """A file written for a job that was never stored (its API died before the submit), or
    by an attempt that was lost: listed before it was written, it is deleted at its time."""
    settings = make_settings(image_file_bytes=IMAGE_FILE_BYTES)
    store = JobStore(redis, 60)
    orphan, kept = (f"{settings.uploads_url}/images/{name}.png" for name in ("orphan", "kept"))
    for url, for_s in ((orphan, 0.5), (kept, 3600)):
        store.hold_file(url, for_s)
        write_file(url, cat_png, {})
    start_dispatcher(settings)
    wait_until(lambda: len(image_files(settings)) == 1, timeout_s=20, what="the orphan file to be deleted")
    assert image_files(settings)[0].name == "kept.png"
    assert [url.decode() for url in redis.zrange(keys.IMAGE_FILES, 0, -1)] == [kept]


def test_a_retried_image_leaves_one_file(make_settings, start_api, redis, cat_png):
    """A retry with the same Idempotency-Key answers the first request's job: the file the
    retry wrote as it streamed in is deleted at once, and nothing more is held. The key's
    fingerprint is hashed as the body streams, the same as of a body read whole: a retry
    sent to an API that keeps the image in Redis is the same request. The same key with
    another body is refused, and its file deleted too."""
    settings = make_settings(image_file_bytes=IMAGE_FILE_BYTES)
    api = start_api(settings)
    first = post(api, "a", cat_png, **{"Idempotency-Key": "k1"})
    held = int(redis.hget(keys.HELD_BYTES, "a"))
    again = post(api, "a", cat_png, **{"Idempotency-Key": "k1"})
    in_redis = post(start_api(make_settings(image_file_bytes=0)), "a", cat_png, **{"Idempotency-Key": "k1"})
    assert first.status_code == 201 and again.json()["token"] == in_redis.json()["token"] == first.json()["token"]
    other = post(api, "a", cat_png[:-1000] + cat_png[-1000:].replace(b"\x00", b"\x01", 1), **{"Idempotency-Key": "k1"})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]
    assert [path.name for path in image_files(settings)] == [f"{first.json()['token']}.png"]
    assert int(redis.hget(keys.HELD_BYTES, "a")) == held
    assert redis.zcard(keys.uploads("image", "a")) == 0


def test_an_image_kept_as_a_file_runs_again_and_is_cancelled(
    make_settings, start_api, start_dispatcher, redis, cat_png
):
    """A rerun reads the input from its file while it is kept; a cancelled job's input file
    is deleted; an ended job's input is gone, and its rerun says so (409)."""
    settings = make_settings(image_file_bytes=IMAGE_FILE_BYTES)
    api = start_api(settings)
    headers = {"X-Client-Id": "a"}
    queued = post(api, "a", cat_png).json()["token"]
    again = httpx.post(f"{api}/tasks/{queued}/rerun", headers=headers)
    assert again.status_code == 201, again.text
    rerun = again.json()["token"]
    assert (settings.data_dir / "uploads" / "images" / f"{rerun}.png").read_bytes() == cat_png
    cancelled = httpx.delete(f"{api}/tasks/{queued}", headers=headers)
    assert cancelled.status_code == 200
    assert [path.name for path in image_files(settings)] == [f"{rerun}.png"]
    start_dispatcher(settings)
    finished(api, "a", rerun)
    output = httpx.get(f"{api}/randomize/{rerun}/result", headers=headers).content
    assert tiles(pixels(output), 60) == tiles(pixels(cat_png), 60)
    gone = httpx.post(f"{api}/tasks/{rerun}/rerun", headers=headers)
    assert gone.status_code == 409 and "no longer kept" in gone.json()["error"]
    assert Doctor(redis).check() == []


def test_an_image_is_kept_as_objects_where_the_uploads_store_is_s3(
    make_settings, start_api, start_dispatcher, redis, cat_png, monkeypatch
):
    """The same path on a real S3 API (a moto server on loopback), as on AWS: the API
    writes the input object, the worker reads it and writes the output object, the API
    streams it back; the input object is deleted at the job's end."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with moto_server() as endpoint:
        bucket = new_bucket(endpoint)
        settings = make_settings(
            image_file_bytes=IMAGE_FILE_BYTES, uploads_url=f"s3://{bucket}/uploads", s3_endpoint_url=endpoint
        )
        api = start_api(settings)
        token = post(api, "a", cat_png).json()["token"]
        s3 = s3_client(endpoint)

        def objects() -> list[str]:
            return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

        assert objects() == [f"uploads/images/{token}.png"]
        assert not redis.exists(keys.input_(token))
        start_dispatcher(settings)
        finished(api, "a", token)
        output = httpx.get(f"{api}/randomize/{token}/result", headers={"X-Client-Id": "a"}).content
        assert tiles(pixels(output), 60) == tiles(pixels(cat_png), 60)
        job = JobStore(redis, 60).get(token)
        key = job.output_url.removeprefix(f"s3://{bucket}/")
        wait_until(lambda: objects() == [key], timeout_s=10, what="the input object to be deleted")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == output
        assert Doctor(redis).check() == []
