"""Uploads straight to S3 (POST /even-sum/uploads): a live API and dispatcher in front of a
real S3 API, a moto server on loopback. Parts are PUT on the presigned URLs the API hands
out, exactly as a client elsewhere would.

moto holds every part but the last to S3's 5 MiB minimum, as S3 does, so the one test
that completes a multi-part upload sends ~11 MiB; the others need no more than a part of
a few bytes. moto does not check a presigned URL's expiry: the expiry tests check what
the API signs and what it refuses and cleans up once the upload has expired.
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from backend.api.direct_uploads import S3_MAX_PARTS, S3_MIN_PART_BYTES, plan_parts
from backend.jobs import keys
from backend.jobs.clients import ClientRegistry
from backend.jobs.doctor import Doctor
from backend.run import http_client
from backend.run.http_client import SpaceTime
from compute.defaults import MiB
from compute.errors import InvalidInput
from tests.dropping import dropping_proxy
from tests.images import png_bytes
from tests.moto_s3 import REGION, moto_server, new_bucket, s3_client
from tests.waiting import wait_status, wait_until

SMALL = b"1 2 3 4 -10 7\n"  # sum of evens: -4


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_settings(endpoint, make_settings, monkeypatch):
    """Settings factory for an API whose uploads store is a fresh bucket on the moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    bucket = new_bucket(endpoint)

    def make(**overrides):
        defaults = dict(
            uploads_url=f"s3://{bucket}/uploads",
            s3_endpoint_url=endpoint,
            direct_upload_part_bytes=S3_MIN_PART_BYTES,
            even_sum_block_bytes=4 * MiB,
        )
        return make_settings(**{**defaults, **overrides})

    return make


def bucket_of(settings) -> str:
    return settings.uploads_url.removeprefix("s3://").split("/")[0]


def pending_on_s3(settings) -> list[dict]:
    return s3_client(settings.s3_endpoint_url).list_multipart_uploads(Bucket=bucket_of(settings)).get("Uploads", [])


def start(api: str, size: int, headers: dict | None = None, **extra) -> dict:
    response = httpx.post(f"{api}/even-sum/uploads", json={"size": size, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def put(part: dict, data: bytes) -> str:
    """PUT a part on its presigned URL, as any client would; S3's ETag."""
    response = httpx.put(part["url"], content=data)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


def complete(api: str, upload_id: str, etags: dict[int, str], headers: dict | None = None) -> httpx.Response:
    parts = [{"part_number": n, "etag": etag} for n, etag in etags.items()]
    return httpx.post(f"{api}/even-sum/uploads/{upload_id}/complete", json={"parts": parts}, headers=headers)


def numbers(first: int, stop: int) -> tuple[bytes, dict]:
    """The integers first..stop-1, one a line, and their exact even-sum result."""
    data = b"\n".join(b"%d" % i for i in range(first, stop))
    evens = range(first + first % 2, stop, 2)
    return data, {"sum": sum(evens), "even_count": len(evens), "count": stop - first, "bytes": len(data)}


def submit(api: str, path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend.run.cli", "submit", "even-sum", str(path), "--api", api, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_spacetime_submit_sends_a_large_file_straight_to_s3(s3_settings, start_api, start_dispatcher, redis, tmp_path):
    settings = s3_settings()
    api = start_api(settings)
    start_dispatcher(settings)
    data, expected = numbers(-800_000, 800_000)  # 11.2 MiB: parts of 5, 5 and 1.2 MiB
    path = tmp_path / "numbers.txt"
    path.write_bytes(data)

    done = submit(api, path, "--client-id", "big", "--keep-input")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected
    assert "upload (direct)" in done.stderr  # the parts' progress bar

    token = done.stderr.split("token ")[1].split()[0]
    record = httpx.get(f"{api}/tasks/{token}", headers={"X-Client-Id": "big"}).json()
    assert "input_url" not in record  # the upload's own key is the server's
    assert record["client"] == "big" and record["bytes"] == len(data)
    head = s3_client(settings.s3_endpoint_url).head_object(Bucket=bucket_of(settings), Key=f"uploads/{token}.txt")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')  # completed from three parts
    assert pending_on_s3(settings) == []
    assert redis.keys("direct-upload*") == []


def test_a_lost_answer_of_a_direct_upload_is_retried_into_one_job(
    s3_settings, start_api, start_dispatcher, redis, tmp_path, monkeypatch
):
    """The answer to `complete` is lost with its connection: the client asks again, not
    from the start, and gets the job the first call made."""
    monkeypatch.setattr(http_client, "DIRECT_UPLOAD_MIN_BYTES", 1)  # a one-part upload
    settings = s3_settings()
    api = start_api(settings)
    start_dispatcher(settings)
    data, expected = numbers(-1000, 1000)
    path = tmp_path / "numbers.txt"
    path.write_bytes(data)
    with dropping_proxy(api, drops=1, marker=b"/complete ") as proxy, SpaceTime(proxy.url) as st:
        token = st.submit("even-sum", str(path))
        assert st.watch(token)["status"] == "finished" and st.result(token) == expected
    assert proxy.dropped == 1
    (listed,) = redis.zrange(keys.jobs("anonymous"), 0, -1)  # one job
    assert listed.decode().endswith(token)
    assert pending_on_s3(settings) == []  # one upload started, and completed


def test_small_files_and_local_stores_keep_the_streamed_body(
    s3_settings, make_settings, start_api, start_dispatcher, tmp_path
):
    settings = s3_settings()
    start_dispatcher(settings)  # it reads the local store's files too
    small = tmp_path / "small.txt"
    small.write_bytes(SMALL)
    done = submit(start_api(settings), small)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sum"] == -4
    assert "upload" in done.stderr and "direct" not in done.stderr

    local = start_api(make_settings(even_sum_block_bytes=4 * MiB))  # the uploads store is a folder
    refused = httpx.post(f"{local}/even-sum/uploads", json={"size": 10 * MiB})
    assert refused.status_code == 404
    assert "S3 uploads store" in refused.json()["error"] and "POST /even-sum" in refused.json()["error"]
    assert httpx.post(f"{local}/even-sum/uploads/{'0' * 32}/complete", json={"parts": []}).status_code == 404
    off = httpx.post(f"{start_api(s3_settings(direct_uploads=False))}/even-sum/uploads", json={"size": 10 * MiB})
    assert off.status_code == 404 and "turned off" in off.json()["error"]
    data, expected = numbers(0, 1_200_000)  # over the client's threshold for direct uploads
    large = tmp_path / "large.txt"
    large.write_bytes(data)
    done = submit(local, large)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected
    assert "direct" not in done.stderr


def test_a_wrong_etag_is_refused_and_the_right_one_then_accepted(s3_settings, start_api, start_dispatcher, redis):
    settings = s3_settings()
    api = start_api(settings)
    start_dispatcher(settings)
    upload = start(api, len(SMALL))
    assert [p["size"] for p in upload["parts"]] == [len(SMALL)]
    record_ttl = redis.ttl(keys.direct_upload(upload["upload_id"]))
    assert settings.direct_upload_expiry_s < record_ttl <= settings.direct_upload_expiry_s + keys.DIRECT_UPLOAD_GRACE_S
    etag = put(upload["parts"][0], SMALL)

    wrong = complete(api, upload["upload_id"], {1: '"0123456789abcdef0123456789abcdef"'})
    assert wrong.status_code == 400
    assert 'part 1: ETag "0123456789abcdef0123456789abcdef" is not the uploaded part\'s' in wrong.json()["error"]

    right = complete(api, upload["upload_id"], {1: etag})  # a refused call leaves the upload pending
    assert right.status_code == 201, right.text
    token = right.json()["token"]
    assert token == upload["token"]  # known from the start
    assert wait_status(api, "even-sum", token)[-1] == {"status": "finished"}
    assert httpx.get(f"{api}/even-sum/{token}/result").json()["sum"] == -4
    again = complete(api, upload["upload_id"], {1: etag})  # a retry: the same job, never a second one
    assert again.status_code == 201 and again.json() == {"token": token}
    assert again.headers["idempotent-replayed"] == "true"
    assert redis.zcard(keys.jobs("anonymous")) == 1


def test_a_retried_start_answers_the_same_upload(s3_settings, start_api):
    api = start_api(s3_settings())
    first = httpx.post(f"{api}/even-sum/uploads", json={"size": 10}, headers={"Idempotency-Key": "start-1"})
    again = httpx.post(f"{api}/even-sum/uploads", json={"size": 10}, headers={"Idempotency-Key": "start-1"})
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    other = httpx.post(f"{api}/even-sum/uploads", json={"size": 11}, headers={"Idempotency-Key": "start-1"})
    assert other.status_code == 422
    etag = put(first.json()["parts"][0], SMALL[:10])
    assert complete(api, first.json()["upload_id"], {1: etag}).json() == {"token": first.json()["token"]}


def test_a_kept_start_answer_counts_against_its_clients_held_bytes(s3_settings, start_api, redis):
    """A start's answer lists a presigned URL a part and is kept a day for its retries:
    uncounted, a client could keep megabytes of them an upload (remember.lua)."""
    api = start_api(s3_settings(default_max_held_bytes=128 * 1024))
    a = {"X-Client-Id": "a"}
    first = httpx.post(
        f"{api}/even-sum/uploads", json={"size": 400 * S3_MIN_PART_BYTES}, headers={**a, "Idempotency-Key": "big"}
    )
    assert first.status_code == 201 and len(first.json()["parts"]) == 400
    (key,) = redis.keys("idempotency:a:*")
    cost = redis.memory_usage(key) + keys.HELD_ENTRY_BYTES
    assert cost > len(first.content) and int(redis.hget(keys.HELD_BYTES, "a")) == cost
    kept_until = redis.zscore(keys.HELD_OUTPUTS, f"{first.json()['upload_id']}/key a {cost}")
    assert kept_until == pytest.approx(time.time() + keys.IDEMPOTENCY_TTL_S, abs=60)
    again = httpx.post(
        f"{api}/even-sum/uploads", json={"size": 400 * S3_MIN_PART_BYTES}, headers={**a, "Idempotency-Key": "big"}
    )
    assert again.headers["idempotent-replayed"] == "true" and int(redis.hget(keys.HELD_BYTES, "a")) == cost
    # Past its bound by that answer alone: a's next image waits, another client's does not.
    png, image = png_bytes(Image.new("L", (8, 8))), {"Content-Type": "image/png"}
    refused = httpx.post(f"{api}/randomize", content=png, headers={**a, **image})
    assert refused.status_code == 429 and "holds" in refused.json()["error"]
    assert httpx.post(f"{api}/randomize", content=png, headers={"X-Client-Id": "b", **image}).status_code == 201
    assert Doctor(redis).check() == []


def test_concurrent_complete_calls_make_one_job(s3_settings, start_api, redis):
    api = start_api(s3_settings())
    upload = start(api, len(SMALL))
    etag = put(upload["parts"][0], SMALL)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: complete(api, upload["upload_id"], {1: etag}), range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert 201 in statuses and set(statuses) <= {201, 409}, [a.text for a in answers]
    made = [a for a in answers if a.status_code == 201 and "idempotent-replayed" not in a.headers]
    assert len(made) == 1 and {a.json()["token"] for a in answers if a.status_code == 201} == {upload["token"]}
    assert redis.llen(keys.TASKS) == 1


def test_parts_follow_s3s_rules():
    assert plan_parts(11 * MiB, None, 5 * MiB).describe() == "3 part(s) of 5242880 bytes, the last one 1048576 bytes"
    assert plan_parts(100, None, 64 * MiB).count == 1
    huge = plan_parts(5 * 1024**4, None, 64 * MiB)  # 5 TiB, S3's largest object: parts grow to fit 10,000
    assert huge.count <= S3_MAX_PARTS and huge.part_bytes % MiB == 0
    assert plan_parts(10 * MiB, 6 * MiB, 64 * MiB).part_size(2) == 4 * MiB
    with pytest.raises(InvalidInput, match=r"too many parts: .* make part_size at least"):
        plan_parts(S3_MAX_PARTS * S3_MIN_PART_BYTES + 1, S3_MIN_PART_BYTES, 64 * MiB)
    with pytest.raises(InvalidInput, match="part_size must be"):
        plan_parts(100, 1024, 64 * MiB)


def test_missing_wrong_size_and_extra_parts_are_named(s3_settings, start_api):
    settings = s3_settings()
    api = start_api(settings)
    size = S3_MIN_PART_BYTES + 100  # two parts: 5 MiB and 100 bytes
    upload = start(api, size)
    assert [p["size"] for p in upload["parts"]] == [S3_MIN_PART_BYTES, 100]
    last = put(upload["parts"][1], b"2" * 99)  # one byte short; part 1 never sent

    response = complete(api, upload["upload_id"], {1: '"abc"', 2: last})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "part 1 is missing: it was never uploaded" in error
    assert "part 2 has 99 bytes; it must have 100" in error

    # A third part, put there by someone holding credentials (no URL of the API allows it):
    # S3's listing shows it, whatever the client says.
    s3 = s3_client(settings.s3_endpoint_url)
    (pending,) = pending_on_s3(settings)
    s3.upload_part(
        Bucket=bucket_of(settings), Key=pending["Key"], UploadId=pending["UploadId"], PartNumber=3, Body=b"4"
    )
    response = complete(api, upload["upload_id"], {1: '"abc"', 2: last})
    assert (
        response.status_code == 400 and "too many parts: part 3 is not one of the 2 part(s)" in response.json()["error"]
    )
    listed = complete(api, upload["upload_id"], {1: '"abc"', 2: last, 7: '"abc"'})
    assert listed.status_code == 400 and "part 7 is not one of the" in listed.json()["error"]


def test_bad_requests_are_400_and_oversized_ones_413(s3_settings, start_api):
    api = start_api(s3_settings(max_upload_bytes=10 * MiB, default_max_backlog_bytes=8 * MiB))
    for body, problem in [
        ({"size": 0}, "size"),
        ({"size": 100, "part_size": 1024}, "part_size"),
        ({"size": "lots"}, "size"),
    ]:
        response = httpx.post(f"{api}/even-sum/uploads", json=body)
        assert response.status_code == 400 and problem in response.json()["error"], response.text
    too_many = httpx.post(f"{api}/even-sum/uploads", json={"size": 10 * MiB, "part_size": S3_MIN_PART_BYTES})
    assert too_many.status_code == 413 and "backlog quota" in too_many.json()["error"]
    over_limit = httpx.post(f"{api}/even-sum/uploads", json={"size": 11 * MiB})
    assert over_limit.status_code == 413 and "limit" in over_limit.json()["error"]
    upload = start(api, len(SMALL))
    parts = [{"part_number": 1, "etag": '"a"'}, {"part_number": 1, "etag": '"b"'}]
    response = httpx.post(f"{api}/even-sum/uploads/{upload['upload_id']}/complete", json={"parts": parts})
    assert response.status_code == 400 and "part 1 is listed twice" in response.json()["error"]
    unknown = httpx.post(f"{api}/even-sum/uploads/not-an-id/complete", json={"parts": parts})
    assert unknown.status_code == 400


def test_an_expired_upload_is_refused_and_its_urls_expire_with_it(s3_settings, start_api):
    settings = s3_settings(direct_upload_expiry_s=1, direct_upload_sweep_s=3600)  # no sweep during the test
    api = start_api(settings)
    upload = start(api, len(SMALL))
    # SigV4: S3 refuses the URL X-Amz-Expires seconds after X-Amz-Date, when the upload expires.
    query = parse_qs(urlsplit(upload["parts"][0]["url"]).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    assert query["X-Amz-Expires"] == ["1"]
    assert abs(signed_at + 1 - upload["expires_at"]) < 2  # X-Amz-Date has whole seconds
    etag = put(upload["parts"][0], SMALL)  # in time
    time.sleep(max(0.0, upload["expires_at"] - time.time()) + 0.1)
    late = complete(api, upload["upload_id"], {1: etag})
    assert late.status_code == 404 and "expired at" in late.json()["error"]


def test_an_abandoned_upload_is_aborted_and_forgotten(s3_settings, start_api, redis):
    # 3 s: long enough for the start, the part and the check below on a loaded machine
    settings = s3_settings(direct_upload_expiry_s=3, direct_upload_sweep_s=0.2)
    api = start_api(settings)
    upload = start(api, len(SMALL))
    etag = put(upload["parts"][0], SMALL)
    assert len(pending_on_s3(settings)) == 1 and redis.zcard(keys.DIRECT_UPLOADS) == 1

    wait_until(lambda: not pending_on_s3(settings), timeout_s=15, what="the sweep to abort the upload")
    assert redis.zcard(keys.DIRECT_UPLOADS) == 0 and redis.keys("direct-upload:*") == []
    gone = httpx.put(upload["parts"][0]["url"], content=SMALL)
    assert gone.status_code != 200  # S3 answers 404 NoSuchUpload; moto 5.2.5 fails on it with a 500
    late = complete(api, upload["upload_id"], {1: etag})
    assert late.status_code == 404 and "no pending upload" in late.json()["error"]


def test_the_start_up_sweep_spares_pending_direct_uploads(s3_settings, start_api):
    """The sweep of uploads cut off by a crash aborts old multipart uploads under the prefix;
    a direct upload that a client may still fill is not one of them, however old."""
    settings = s3_settings(upload_stale_s=0.001)
    api = start_api(settings)
    upload = start(api, len(SMALL))
    s3 = s3_client(settings.s3_endpoint_url)
    crashed = s3.create_multipart_upload(Bucket=bucket_of(settings), Key="uploads/crashed.txt")["UploadId"]
    time.sleep(0.01)
    start_api(settings)  # a second API: its start-up sweeps the store
    (left,) = pending_on_s3(settings)
    assert left["UploadId"] != crashed and left["Key"] != "uploads/crashed.txt"
    etag = put(upload["parts"][0], SMALL)
    assert complete(api, upload["upload_id"], {1: etag}).status_code == 201


def test_another_clients_upload_is_404_in_keys_mode(s3_settings, start_api, start_dispatcher, redis):
    settings = s3_settings(auth="keys")
    api = start_api(settings)
    start_dispatcher(settings)
    registry = ClientRegistry(redis, settings)
    alice = {"Authorization": f"Bearer {registry.add('alice')}"}
    bob = {"Authorization": f"Bearer {registry.add('bob')}"}
    assert httpx.post(f"{api}/even-sum/uploads", json={"size": 10}).status_code == 401
    upload = start(api, len(SMALL), headers=alice)
    etag = put(upload["parts"][0], SMALL)

    stolen = complete(api, upload["upload_id"], {1: etag}, headers=bob)
    assert stolen.status_code == 404 and "no pending upload" in stolen.json()["error"]
    mine = complete(api, upload["upload_id"], {1: etag}, headers=alice)
    assert mine.status_code == 201, mine.text
    token = mine.json()["token"]
    assert httpx.get(f"{api}/tasks/{token}", headers=alice).json()["client"] == "alice"
    assert wait_status(api, "even-sum", token, headers=alice)[-1] == {"status": "finished"}
    assert httpx.get(f"{api}/even-sum/{token}/result", headers=alice).json()["sum"] == -4


def test_a_client_at_its_count_of_pending_direct_uploads_gets_429_while_another_starts(s3_settings, start_api):
    api = start_api(s3_settings(default_max_direct_uploads=2))
    a = {"X-Client-Id": "a"}
    first = start(api, len(SMALL), a)
    start(api, len(SMALL), a)
    third = httpx.post(f"{api}/even-sum/uploads", json={"size": len(SMALL)}, headers=a)
    assert third.status_code == 429 and "uploads in progress" in third.json()["error"]
    start(api, len(SMALL), {"X-Client-Id": "b"})
    etag = put(first["parts"][0], SMALL)
    assert complete(api, first["upload_id"], {1: etag}, a).status_code == 201
    # The completed one freed its place; the API answers a second from memory after a 429
    # (backend/api/cooldowns.py), so a's retry may need that second.
    wait_until(lambda: starts(api, a), timeout_s=5, what="a's place back")


def starts(api: str, headers: dict) -> bool:
    return httpx.post(f"{api}/even-sum/uploads", json={"size": len(SMALL)}, headers=headers).status_code == 201


def test_a_direct_upload_is_deleted_from_s3_when_its_job_ends(s3_settings, start_api, start_dispatcher):
    settings = s3_settings()
    api = start_api(settings)
    start_dispatcher(settings)
    upload = start(api, len(SMALL))
    token = complete(api, upload["upload_id"], {1: put(upload["parts"][0], SMALL)}).json()["token"]
    assert wait_status(api, "even-sum", token)[-1] == {"status": "finished"}
    s3 = s3_client(settings.s3_endpoint_url)
    wait_until(
        lambda: "Contents" not in s3.list_objects_v2(Bucket=bucket_of(settings), Prefix=f"uploads/{token}"),
        what="the upload to be deleted",
    )
