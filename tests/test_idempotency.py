"""Safe retries (the Idempotency-Key header) with a live API and Redis: a retry answers the
job the first request made, whatever the door, even when 50 arrive at once or the first
answer was lost; the same key for another request is a 422."""

import hashlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from backend.jobs import keys
from backend.jobs.doctor import Doctor
from backend.run.http_client import SpaceTime
from tests.dropping import dropping_proxy
from tests.waiting import wait_until

NUMBERS = b"2 4 6 7\n" * 200


def post(api: str, key: str | None, data: bytes = NUMBERS, kind: str = "even-sum", client: str = "") -> httpx.Response:
    sent = {"Content-Type": "text/plain" if kind == "even-sum" else "image/png"}
    if client:
        sent["X-Client-Id"] = client
    if key:
        sent["Idempotency-Key"] = key
    return httpx.post(f"{api}/{kind}", content=data, headers=sent, timeout=30)


@pytest.fixture
def api(make_settings, start_api) -> str:
    # 50 at once must meet neither the rate limit nor the cap of uploads in progress.
    return start_api(make_settings(default_rate=0, default_max_uploads=50))


def jobs_of(redis, client: str = "anonymous") -> int:
    return redis.zcard(keys.jobs(client))


def test_a_retry_answers_the_same_job_on_every_door(api, redis, cat_png, settings):
    first = post(api, "key-1")
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = post(api, "key-1")
    assert (again.status_code, again.json(), again.headers["idempotent-replayed"]) == (201, first.json(), "true")
    other = post(api, "key-1", b"1 3")
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]
    assert post(api, "key-1", client="bob").headers.get("idempotent-replayed") is None  # keys are per client

    image = post(api, "key-2", cat_png, kind="randomize")
    assert post(api, "key-2", cat_png, kind="randomize").json() == image.json()
    assert post(api, "key-2", NUMBERS).status_code == 422  # another kind is another request

    url = f"{settings.uploads_url}/{first.json()['token']}.txt"  # no dispatcher here: the upload stays
    named = httpx.post(f"{api}/even-sum", json={"url": url}, headers={"Idempotency-Key": "key-3"})
    replay = httpx.post(f"{api}/even-sum", json={"url": url}, headers={"Idempotency-Key": "key-3"})
    assert named.status_code == 201 and replay.json() == named.json()
    assert jobs_of(redis) == 3 and jobs_of(redis, "bob") == 1
    assert 0 < redis.ttl(keys.idempotency("anonymous", _sha("key-1"))) <= keys.IDEMPOTENCY_TTL_S
    uploads = sorted(p.name for p in Path(settings.uploads_url.removeprefix("file://")).iterdir())
    assert len(uploads) == 2  # the retry's copy of the body was deleted


def test_fifty_concurrent_posts_with_one_key_make_one_job(api, redis):
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: post(api, "same-key"), range(50)))
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers if a.status_code != 201]
    assert len({a.json()["token"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 49
    assert jobs_of(redis) == 1 and redis.llen(keys.TASKS) == 1


def test_an_answer_lost_with_its_connection_is_answered_to_the_retry(api, redis):
    """The connection drops after the job was stored, before the client read the answer."""
    address = urlsplit(api)
    request = (
        f"POST /even-sum HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: text/plain\r\n"
        f"Idempotency-Key: lost-answer\r\nContent-Length: {len(NUMBERS)}\r\n\r\n"
    ).encode() + NUMBERS
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(request)
        wait_until(lambda: jobs_of(redis) == 1, timeout_s=10, what="the job to be stored")
    time.sleep(0.1)
    retry = post(api, "lost-answer")
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert jobs_of(redis) == 1


def test_a_key_counts_against_its_clients_held_bytes_while_it_is_kept(api, redis):
    """A key is kept a day: uncounted, a client at its rate would keep millions."""
    token = post(api, "counted", client="k").json()["token"]
    (key,) = redis.keys("idempotency:k:*")
    cost = redis.memory_usage(key) + keys.HELD_ENTRY_BYTES
    assert int(redis.hget(keys.HELD_BYTES, "k")) == cost  # no dispatcher: the job's record is not kept yet
    kept_until = redis.zscore(keys.HELD_OUTPUTS, f"{token}/key k {cost}")
    assert kept_until == pytest.approx(time.time() + keys.IDEMPOTENCY_TTL_S, abs=60)
    assert post(api, "counted", client="k").headers["idempotent-replayed"] == "true"
    assert int(redis.hget(keys.HELD_BYTES, "k")) == cost  # a replay keeps nothing more
    assert Doctor(redis).check() == []


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "é"])
def test_a_malformed_key_is_400(api, key):
    response = httpx.post(
        f"{api}/even-sum", content=NUMBERS, headers={"Content-Type": "text/plain", "Idempotency-Key": key.encode()}
    )
    assert response.status_code == 400


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_client_retries_a_dropped_submission_under_one_key(api, redis, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_bytes(NUMBERS)
    with dropping_proxy(api, drops=2) as proxy, SpaceTime(proxy.url) as st:
        token = st.submit("even-sum", str(numbers))
    assert proxy.dropped == 2 and jobs_of(redis) == 1
    assert redis.zrange(keys.jobs("anonymous"), 0, -1)[0].decode().endswith(token)
