"""Per-client bounds (issue 17): what one client may hold of a shared resource is refused
to that client alone (429 with Retry-After, or 413 for one request too large), while
another client submitting at the same time is served as if alone."""

import asyncio
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.api.auth import holder_of
from backend.api.cooldowns import WAITS_PER_CALLER, Cooldowns
from backend.api.session import Credential
from backend.core.exceptions import OverQuota
from backend.core.job import Lane
from backend.core.kinds import EVEN_SUM, RANDOMIZE
from backend.jobs import keys, scripts
from backend.jobs.connection import connect
from backend.jobs.doctor import Doctor
from backend.jobs.queue import JobQueue, QueuePolicy
from backend.jobs.store import EndResult, JobStore, Submission
from compute import redis_values, stored
from compute.errors import InvalidImage
from compute.png import output_bound
from compute.redis_values import read_value, write_value
from compute.stored import redis_at
from tests.held_bytes import cost_of, held_for
from tests.images import ramps_png
from tests.waiting import wait_status, wait_until


def post_image(api: str, client: str, png: bytes) -> httpx.Response:
    return httpx.post(f"{api}/randomize", content=png, headers={"X-Client-Id": client}, timeout=30)


def at_once(*calls) -> list:
    """Run the calls together; their answers, in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def test_a_client_over_the_bytes_it_may_hold_in_redis_gets_429_while_another_is_served(
    make_settings, start_api, redis, cat_png
):
    held = held_for(redis, cat_png)  # more than the image: what Redis spends, with room for the output
    api = start_api(make_settings(default_max_held_bytes=int(3.5 * held)))  # no dispatcher: inputs stay

    def flood() -> list[int]:
        return [post_image(api, "a", cat_png).status_code for _ in range(10)]

    def steady() -> list[int]:
        return [post_image(api, "b", cat_png).status_code for _ in range(3)]

    a, b = at_once(flood, steady)
    assert a == [201] * 3 + [429] * 7 and b == [201] * 3
    refused = post_image(api, "a", cat_png)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "holds" in refused.json()["error"]
    assert int(redis.hget(keys.HELD_BYTES, "a")) == 3 * held
    too_big = post_image(api, "c", ramps_png(1500))  # 13 KB, and room for its 9 MB shuffle
    assert too_big.status_code == 413, too_big.text
    assert "with room for its output" in too_big.json()["error"]
    assert Doctor(redis).check() == []


def test_a_client_at_its_held_bytes_limit_sends_no_refused_image_to_redis(make_settings, start_api, redis, cat_png):
    """bench/hostile.py, scenario 1: each refused 20 MiB image reached Redis first (as the
    submit script's argument), so a flood at its limit still filled Redis' client buffers.
    Now the API asks first: a refused image costs Redis a few bytes, not the image."""
    room = int(1.5 * held_for(redis, cat_png))  # for one image
    api = start_api(make_settings(default_max_held_bytes=room))  # no dispatcher: inputs stay
    assert post_image(api, "a", cat_png).status_code == 201
    received = redis.info("stats")["total_net_input_bytes"]
    assert [post_image(api, "a", cat_png).status_code for _ in range(3)] == [429] * 3
    assert redis.info("stats")["total_net_input_bytes"] - received < len(cat_png) // 2
    assert Doctor(redis).check() == []


def test_a_client_that_retries_too_soon_is_held_for_a_moment_then_checked(make_settings, start_api, redis, cat_png):
    """A flood at its bound gets one answer a moment per connection (backend/api/
    cooldowns.py): right after a 429, the same caller's requests on that route are held
    until the moment ends, then checked for real; past WAITS_PER_CALLER held at once, the
    rest get the same 429 at once, from memory. Another client is served meanwhile, and
    room that comes back sooner than Retry-After said is found a moment later."""
    settings = make_settings(default_max_held_bytes=int(1.5 * held_for(redis, cat_png)), refusal_cooldown_s=2)
    api = start_api(settings)
    first = httpx.post(f"{api}/randomize", content=cat_png, headers={"X-Client-Id": "a"})
    assert first.status_code == 201
    refused = post_image(api, "a", cat_png)
    assert refused.status_code == 429

    def checks() -> int:  # each real check of an image's room is one held_reserve.lua call
        return redis.info("commandstats")["cmdstat_evalsha"]["calls"]

    before = checks()
    with ThreadPoolExecutor(WAITS_PER_CALLER + 3) as pool:
        sent = [pool.submit(post_image, api, "a", cat_png) for _ in range(WAITS_PER_CALLER + 3)]
        wait_until(lambda: held(api) == WAITS_PER_CALLER, timeout_s=2, what="a's retries to be held")
        retries = [answer.result() for answer in sent]
    assert held(api) == 0
    assert {(r.status_code, r.json()["error"]) for r in retries} == {(429, refused.json()["error"])}
    assert all(1 <= int(r.headers["retry-after"]) <= int(refused.headers["retry-after"]) for r in retries)
    assert checks() - before == WAITS_PER_CALLER  # the held ones; the 3 past them never reached Redis
    assert post_image(api, "b", cat_png).status_code == 201
    cancelled = httpx.delete(f"{api}/tasks/{first.json()['token']}", headers={"X-Client-Id": "a"})
    assert cancelled.status_code == 200, cancelled.text
    assert post_image(api, "a", cat_png).status_code == 201  # held for what is left of the moment, then let in
    assert Doctor(redis).check() == []


def held(api: str) -> float:
    """The API's gauge of submissions held now."""
    families = text_string_to_metric_families(httpx.get(f"{api}/metrics").text)
    return next(s.value for family in families for s in family.samples if s.name == "spacetime_submissions_held")


def test_a_cooldown_is_keyed_by_what_names_the_caller_and_nothing_else():
    """A header the mode ignores (X-Client-Id with a key, the scheme's case) cannot make a
    cooling caller someone new."""
    key = holder_of(Credential("Bearer k1", None), "keys")
    assert key == holder_of(Credential("bearer  k1 ", "another-name"), "keys") == "k1"
    assert holder_of(Credential("Bearer k1", "a"), "open") == holder_of(Credential(None, "a"), "open") == "a"
    cooldowns = Cooldowns(moment_s=30, waits_per_caller=0)  # nothing held: every refusal at once
    cooldowns.start("/randomize", key, OverQuota("client 'a' holds too much", 60))
    with pytest.raises(OverQuota) as refused:
        asyncio.run(cooldowns.wait_out("/randomize", holder_of(Credential("BEARER k1", "b"), "keys")))
    assert refused.value.retry_after_s == 60 and "holds" in str(refused.value)
    asyncio.run(cooldowns.wait_out("/even-sum", key))  # another route: not cooling
    asyncio.run(cooldowns.wait_out("/randomize", "k2"))


def test_an_image_with_no_room_in_redis_is_refused_before_its_body_is_read(make_settings, start_api, redis, cat_png):
    """bench/hostile.py, scenario 1: the API read each refused 20 MiB body before it
    answered 429. With the length declared and no room left, it answers at once: this
    client sends the head and a few bytes, and the 429 comes without the rest."""
    room = int(1.5 * held_for(redis, cat_png))  # for one image
    api = start_api(make_settings(default_max_held_bytes=room))  # no dispatcher: inputs stay
    assert post_image(api, "a", cat_png).status_code == 201
    url = httpx.URL(api)
    head = f"POST /randomize HTTP/1.1\r\nHost: {url.host}\r\nX-Client-Id: a\r\nContent-Length: {len(cat_png)}\r\n\r\n"
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + cat_png[:100])
        assert sock.recv(4096).startswith(b"HTTP/1.1 429 ")


def test_concurrent_images_of_one_client_reach_redis_only_as_far_as_its_bound(
    make_settings, start_api, redis, cat_png, monkeypatch
):
    """bench/hostile.py, scenario 1: the room check let each of a client's concurrent
    submits pass and push its image into Redis, for submit.lua to refuse the extras. Now
    the room is reserved: with room for 2 images, 2 of 8 sent at once reach Redis, and in
    pieces (of 64 KiB here), so that no connection keeps an image-sized buffer after."""
    monkeypatch.setattr(redis_values, "PIECE_BYTES", 64 * 1024)
    held = held_for(redis, cat_png)
    others = {c["id"] for c in redis.client_list()}  # earlier tests' workers: their buffers shrink when idle
    api = start_api(make_settings(default_max_held_bytes=int(2.5 * held)))  # no dispatcher: inputs stay
    received = redis.info("stats")["total_net_input_bytes"]
    answers = at_once(*[lambda: post_image(api, "a", cat_png) for _ in range(8)], lambda: post_image(api, "b", cat_png))
    *a, b = answers
    assert sorted(r.status_code for r in a) == [201] * 2 + [429] * 6 and b.status_code == 201
    assert all(int(r.headers["retry-after"]) >= 1 for r in a if r.status_code == 429)
    assert redis.info("stats")["total_net_input_bytes"] - received < 3.5 * len(cat_png)  # a's 2 and b's 1
    assert int(redis.hget(keys.HELD_BYTES, "a")) == 2 * held
    assert redis.keys("uploads:*") == []  # every reservation ended: stored, or dropped
    buffers = [int(c["qbuf"]) + int(c["qbuf-free"]) for c in redis.client_list() if c["id"] not in others]
    assert max(buffers) < len(cat_png) // 2
    assert Doctor(redis).check() == []


def test_an_image_cut_off_mid_body_releases_its_reservation(make_settings, start_api, redis, cat_png):
    api = start_api(make_settings(default_max_held_bytes=int(1.5 * held_for(redis, cat_png))))
    url = httpx.URL(api)
    head = f"POST /randomize HTTP/1.1\r\nHost: {url.host}\r\nX-Client-Id: a\r\nContent-Length: {len(cat_png)}\r\n\r\n"
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + cat_png[:100])
        wait_until(lambda: redis.zcard(keys.uploads("image", "a")) == 1, what="the image's room to be reserved")
    wait_until(lambda: redis.zcard(keys.uploads("image", "a")) == 0, what="the reservation to be released")
    assert post_image(api, "a", cat_png).status_code == 201  # the room is back
    assert Doctor(redis).check() == []


def test_the_reservation_of_a_dead_api_lapses_with_its_lease(redis, settings, monkeypatch):
    """An API that died between reserving an image's room and storing it cannot release
    the reservation: its lease lapses, and the room is the client's again."""
    monkeypatch.setattr(keys, "IMAGE_LEASE_S", 1)
    store = JobStore(redis, settings.result_ttl_s)
    image = Submission(RANDOMIZE, "a", input_bytes=b"x" * 6000, bytes=6000)  # no room for an output
    held = held_for(redis, image.input_bytes, output_room=0)
    limit = int(2.5 * held)
    store.reserve_held("a", "dead-api-1", 6000, max_held_bytes=limit, output_room=0)  # the API dies here
    store.reserve_held("a", "dead-api-2", 6000, max_held_bytes=limit, output_room=0)
    assert Doctor(redis).check() == [] and redis.zcard(keys.uploads("image", "a")) == 2  # live: no drift
    with pytest.raises(OverQuota, match=r"holds \d+ bytes") as refused:
        store.submit(image, max_held_bytes=limit)
    reserved = int(str(refused.value).split(" holds ")[1].split()[0])
    assert 2 * held <= reserved < 2.5 * held  # a reservation is what its image will hold, at most
    assert redis.ttl(keys.uploads("image", "a")) >= 1
    time.sleep(1.1)
    store.submit(image, max_held_bytes=limit)
    assert int(redis.hget(keys.HELD_BYTES, "a")) == held
    store.reserve_held("a", "dead-api-3", 6000, max_held_bytes=limit, output_room=0)
    time.sleep(1.1)
    assert Doctor(redis).check() == [] and redis.keys("uploads:*") == []  # the doctor dropped the lapsed one


def test_an_input_holds_what_redis_spends_on_it_and_its_reservation_no_less(redis, settings):
    """An image costs Redis its pieces' allocations (compute.redis_values: a 20.0 MiB image
    20.0 MiB, where a string of it took 24): the bound counts that and room for its output
    (no less than the output's bound), and the room reserved before the bytes are sent is
    never less than what they then hold, nor more than a few hundred bytes over."""
    store = JobStore(redis, settings.result_ttl_s)
    piece = redis_values.PIECE_BYTES
    for size in (100, 4096, 100_000, piece, piece + 1, 5 * 1024 * 1024 + 3, 20 * 1024 * 1024 + 12345):
        token, room = f"sized-{size}", size // 3
        data = bytes(size)
        store.reserve_held("a", token, size, max_held_bytes=1 << 40, output_room=room)
        assert redis.zrange(keys.uploads("image", "a"), 0, -1)[0].split()[1:] == [b"%d" % size, b"%d" % room]
        image = Submission(RANDOMIZE, "a", token=token, input_bytes=data, bytes=size, output_room=room)
        store.submit(image, max_held_bytes=1 << 40)
        used = redis.memory_usage(keys.input_(token), samples=0)
        held = int(redis.hget(keys.HELD_BYTES, "a"))
        assert used > size and (size <= piece or used < size * 1.002)  # full pieces waste nothing
        assert held == used + cost_of(redis, room) and cost_of(redis, room) > room
        with pytest.raises(OverQuota, match=r"holds (\d+) bytes") as refused:
            store.reserve_held("a", "probe", size, max_held_bytes=2 * held - 1, output_room=room)  # its twin: no
        assert f"holds {held} bytes" in str(refused.value)
        store.reserve_held("a", "probe", size, max_held_bytes=2 * held + 512, output_room=room)
        store.release_held("a", "probe")
        redis.delete(keys.HELD_BYTES, keys.input_(token))


def test_a_client_has_at_most_its_count_of_images_in_flight(redis, settings, monkeypatch):
    """Each reservation reads its client's others: a client holding many bodies open
    (declared, never sent) is refused past IMAGES_IN_FLIGHT, not made slow for everyone."""
    monkeypatch.setattr(scripts, "CONSTANTS", {**scripts.CONSTANTS, "IMAGES_IN_FLIGHT": 2})
    store = JobStore(redis, settings.result_ttl_s)
    store.reserve_held("a", "open-1", 10)
    store.reserve_held("a", "open-2", 10)
    with pytest.raises(OverQuota, match="2 images on their way") as refused:
        store.reserve_held("a", "open-3", 10)
    assert refused.value.retry_after_s >= 1
    store.reserve_held("a", "open-2", 10)  # a renewal is not a new one
    store.reserve_held("b", "other-1", 10)
    store.submit(Submission(RANDOMIZE, "a", token="open-1", input_bytes=b"x" * 10, bytes=10))
    store.reserve_held("a", "open-3", 10)  # room again once one is stored


def test_a_clients_own_max_held_bytes_overrides_the_default(redis, settings):
    store = JobStore(redis, settings.result_ttl_s)
    image = Submission(RANDOMIZE, "big", input_bytes=b"x" * 600, bytes=600)
    held = held_for(redis, image.input_bytes, output_room=0)
    redis.hset(keys.client("big"), "max_held_bytes", int(1.5 * held))
    store.submit(image, max_held_bytes=10 * held)
    with pytest.raises(OverQuota, match=f"holds {held} bytes"):
        store.submit(image, max_held_bytes=10 * held)
    store.submit(Submission(RANDOMIZE, "small", input_bytes=b"x" * 600, bytes=600), max_held_bytes=10 * held)


def test_an_upload_is_deleted_when_its_job_ends_unless_kept_and_a_named_file_never_is(
    api_url, settings, redis, dispatcher, tmp_path
):
    uploads = tmp_path / "uploads"

    def upload(query: str = "") -> str:
        response = httpx.post(f"{api_url}/even-sum{query}", content=b"2 4 5", headers={"Content-Type": "text/plain"})
        token = response.json()["token"]
        assert wait_status(api_url, "even-sum", token)[-1] == {"status": "finished"}
        return token

    dropped, kept = upload(), upload("?keep_input=true")
    assert not (uploads / f"{dropped}.txt").exists()
    assert (uploads / f"{kept}.txt").exists()
    named = httpx.post(f"{api_url}/even-sum", json={"url": f"{settings.uploads_url}/{kept}.txt"}).json()["token"]
    assert wait_status(api_url, "even-sum", named)[-1] == {"status": "finished"}
    assert (uploads / f"{kept}.txt").exists()  # the service did not store it for this job
    assert Doctor(redis).check() == [] and redis.zcard(keys.INPUTS_TO_DROP) == 0


def test_an_input_left_by_a_process_that_died_after_the_final_write_is_deleted_later(
    make_settings, start_dispatcher, redis, settings, tmp_path, monkeypatch
):
    """A dispatcher (or an API, after a cancel) that wrote a job's end and died before it
    deleted the upload left the file behind: the final write listed it, and a dispatcher's
    periodic check deletes it once INPUT_DROP_GRACE_S has passed."""
    monkeypatch.setattr(keys, "INPUT_DROP_GRACE_S", 0)
    upload = tmp_path / "uploads" / "left.txt"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"2 4")
    store = JobStore(redis, settings.result_ttl_s)
    job = store.submit(Submission(EVEN_SUM, "a", input_url=upload.as_uri(), delete_input=True, bytes=3))
    store.cancel(job.token, None)  # the final write; its process dies before the delete
    assert upload.exists() and redis.zscore(keys.INPUTS_TO_DROP, job.token) is not None
    start_dispatcher(make_settings(doctor_interval_s=0.2))
    wait_until(lambda: not upload.exists(), what="a dispatcher to delete the input left behind")
    wait_until(lambda: redis.zcard(keys.INPUTS_TO_DROP) == 0, what="the input to be taken off the list")


def send(api: str, client: str, body) -> httpx.Response:
    headers = {"X-Client-Id": client, "Content-Type": "text/plain"}
    return httpx.post(f"{api}/even-sum", content=body, headers=headers, timeout=60)


def test_a_client_at_its_count_of_uploads_gets_429_while_another_uploads(make_settings, start_api, redis):
    api = start_api(make_settings(default_max_uploads=2))
    let_go = threading.Event()

    def held_open():
        yield b"2 " * 1000
        let_go.wait(20)
        yield b"4\n"

    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(send, api, "a", held_open()) for _ in range(2)]
        wait_until(lambda: redis.zcard(keys.uploads("stream", "a")) == 2, what="a's two uploads to be reserved")
        third, other = at_once(lambda: send(api, "a", b"2 4"), lambda: send(api, "b", b"2 4"))
        let_go.set()
        ended = [future.result().status_code for future in held]
    assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
    assert "uploads in progress" in third.json()["error"]
    assert other.status_code == 201 and ended == [201, 201]
    assert redis.zcard(keys.uploads("stream", "a")) == 0  # released as they ended


def test_a_chunked_body_reserves_as_it_streams_and_is_cut_at_its_clients_quota(
    make_settings, start_api, redis, tmp_path
):
    api = start_api(make_settings(default_max_backlog_bytes=300_000))

    def chunked(chunks: int):
        for _ in range(chunks):
            yield b"2 " * 50_000

    a, b = at_once(lambda: send(api, "a", chunked(10)), lambda: send(api, "b", chunked(2)))
    assert a.status_code == 429 and "backlog quota" in a.json()["error"], a.text
    assert b.status_code == 201
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [f"{b.json()['token']}.txt"]  # a's cut, deleted
    assert send(api, "c", b"2 " * 200_000).status_code == 413  # declared past the whole quota: unread
    assert redis.keys("uploads:*") == []


def test_large_values_are_read_whole_a_piece_at_a_time(redis, monkeypatch):
    """A worker reading a client's 20 MiB image, or the API its result, makes Redis build
    no 20 MiB reply beside it (compute.redis_values): an HGET of a piece each, and one
    more only where the last piece is full."""
    monkeypatch.setattr(redis_values, "PIECE_BYTES", 1000)
    assert read_value(redis, "missing") is None
    for size in (0, 1, 999, 1000, 1001, 5000, 12345):
        data = os.urandom(size)
        write_value(redis, "value", data, 60)
        assert redis.hlen("value") == max(-(-size // 1000), 1) and 0 < redis.ttl("value") <= 60
        calls = redis.info("commandstats").get("cmdstat_hget", {"calls": 0})["calls"]
        assert read_value(redis, "value") == data
        assert redis.info("commandstats")["cmdstat_hget"]["calls"] - calls == size // 1000 + 1
        redis.delete("value")


def test_every_stored_value_is_pieces_of_one_size_whoever_writes_it(redis, settings, monkeypatch):
    """An input from the API, an output passed as bytes to the final write (finish.lua) and
    one a worker stages: each a hash of pieces (of 1000 bytes here) that read_value reads
    whole, never a string made at its full size by one command; an input's first bytes
    are kept apart too, so that the dispatcher reads an image's header without a piece."""
    monkeypatch.setattr(redis_values, "PIECE_BYTES", 1000)
    monkeypatch.setattr(scripts, "CONSTANTS", {**scripts.CONSTANTS, "PIECE_BYTES": 1000})
    store = JobStore(redis, settings.result_ttl_s)
    queue = JobQueue(redis, "d1", settings.lease_s, QueuePolicy.of(settings))
    data, output = os.urandom(2500), os.urandom(3000)
    token = store.submit(Submission(RANDOMIZE, "a", input_bytes=data, bytes=len(data))).token
    assert redis.type(keys.input_(token)) == b"hash" and redis.hlen(keys.input_(token)) == 3 + 1  # and its head
    assert store.input(token) == data and store.input_head(token) == data[: keys.INPUT_HEAD_BYTES]
    assert store.input_head("missing") == b""
    claim = queue.claim(Lane.interactive)
    assert claim is not None and store.finish(claim.job, output) is EndResult.ok
    assert redis.type(keys.output(token)) == b"hash" and redis.hlen(keys.output(token)) == 3
    assert store.output(token) == output and 0 < redis.ttl(keys.output(token)) <= settings.result_ttl_s
    assert store.input(token) is None
    assert Doctor(redis).check() == []


def test_large_values_go_out_as_they_are_from_the_api_and_the_workers(redis_url):
    """The clients that write images (the API's and dispatchers', backend.jobs.connection;
    a worker's, compute.stored) send a piece's bytes as they are, not in a new copy of the
    whole command (compute.redis_values.command_packer): 20 MiB of fresh buffers fewer
    for each 20 MiB image on each side, and a fifth of the CPU."""
    piece = os.urandom(redis_values.PIECE_BYTES)
    for client in (connect(redis_url), redis_at(redis_url, None)):
        chunks = client.connection_pool.make_connection().pack_command("HSET", "value", "0", piece)
        assert any(chunk is piece for chunk in chunks)
        redis_values.write_value(client, "value", piece * 2 + b"tail", 60)
        assert read_value(client, "value") == piece * 2 + b"tail"


def test_the_records_of_a_clients_ended_jobs_count_against_its_bound(make_settings, start_api, start_dispatcher, redis):
    """Records are kept for the result TTL: uncounted, small jobs at the rate limit would
    keep millions a day. Each ended job's record counts in held bytes (room for a few
    here), so a client that has ended too many is refused until they expire, and another
    client is served."""
    settings = make_settings(default_max_held_bytes=3000)
    api = start_api(settings)
    start_dispatcher(settings)

    def even_sum(client: str) -> httpx.Response:
        headers = {"X-Client-Id": client, "Content-Type": "text/plain"}
        return httpx.post(f"{api}/even-sum", content=b"2 4", headers=headers, timeout=30)

    answers = []
    while len(answers) < 20 and (answer := even_sum("a")).status_code == 201:
        answers.append(answer)
        wait_status(api, "even-sum", answer.json()["token"], headers={"X-Client-Id": "a"})
    assert answer.status_code == 429 and "holds" in answer.json()["error"]
    assert 2 <= len(answers) <= 10  # each keeps some 600-900 bytes
    assert int(redis.hget(keys.HELD_BYTES, "a")) > 3000
    assert even_sum("b").status_code == 201
    assert Doctor(redis).check() == []


def test_an_image_whose_shuffle_outgrows_it_holds_room_for_the_shuffle(
    make_settings, start_api, start_dispatcher, redis, cat_png
):
    """A PNG can come back far larger than it came (tests.images.ramps_png: 18 KB in, 8.9
    MB out): with room for twice its input, a client's outputs could take some 200 times
    the bytes it may hold. Its job now holds room for the most its shuffle can take
    (compute.png.output_bound), reserved from the PNG's first bytes, so the second such
    image has no room and is refused before its body is read; the kept output counts at
    its own cost, and another client is served throughout."""
    ramps = ramps_png(1500)
    room = output_bound(ramps)
    assert room > 400 * len(ramps)
    # In Redis (tests/test_image_files.py: the same as files).
    settings = make_settings(default_max_held_bytes=int(1.5 * held_for(redis, ramps)), image_file_bytes=0)
    api = start_api(settings)
    start_dispatcher(settings)
    first = post_image(api, "a", ramps)
    assert first.status_code == 201
    assert int(redis.hget(keys.HELD_BYTES, "a")) == held_for(redis, ramps) > room
    url = httpx.URL(api)
    head = f"POST /randomize HTTP/1.1\r\nHost: {url.host}\r\nX-Client-Id: a\r\nContent-Length: {len(ramps)}\r\n\r\n"
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + ramps[:100])
        assert sock.recv(4096).startswith(b"HTTP/1.1 429 ")  # on its first 100 bytes
    other = post_image(api, "b", cat_png)
    assert other.status_code == 201
    for client, answer in (("a", first), ("b", other)):
        final = wait_status(api, "randomize", answer.json()["token"], headers={"X-Client-Id": client})[-1]
        assert final["status"] == "finished", final
    output = httpx.get(f"{api}/randomize/{first.json()['token']}/result", headers={"X-Client-Id": "a"}).content
    assert 300 * len(ramps) < len(output) <= room
    kept = redis.memory_usage(keys.output(first.json()["token"]), samples=0)
    assert kept < int(redis.hget(keys.HELD_BYTES, "a")) < kept + 4096  # the output and its record
    assert Doctor(redis).check() == []


def test_a_worker_stores_no_output_over_the_room_its_job_holds(redis, redis_url, monkeypatch, cat_png):
    """The room is a bound the worker keeps, not a guess: an output over it (here, with the
    bound made small) ends the job with a readable error and nothing stored."""
    write_value(redis, "input:bounded", cat_png, 60)
    monkeypatch.setattr(stored, "output_bound", lambda png: 1000)
    with pytest.raises(InvalidImage, match=r"the shuffled image takes \d+ bytes, over the 1000 its job holds for it"):
        stored.randomize_stored(redis_url, "input:bounded", "staged:bounded", 60)
    assert not redis.exists("staged:bounded")


def test_image_bodies_of_no_length_are_reserved_at_the_cap_before_they_are_read(
    make_settings, start_api, redis, cat_png
):
    """A chunked body says nothing of its length: it was read whole into the API's memory
    (up to the cap, 20 MiB) before any room was asked for, so one client's chunked images
    in flight had no bound. Now each reserves room for the cap (and its output) once its
    first bytes are in: with room for 2, a client's third open body is refused at once,
    while another client is served."""
    cap = len(cat_png) + 1000
    settings = make_settings(
        max_image_bytes=cap, default_max_held_bytes=int(2.5 * held_for(redis, cat_png + bytes(1000)))
    )
    api = start_api(settings)
    url = httpx.URL(api)
    head = f"POST /randomize HTTP/1.1\r\nHost: {url.host}\r\nX-Client-Id: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    first = b"%x\r\n" % 1000 + cat_png[:1000] + b"\r\n"  # one chunk of 1000 bytes, then the body stalls
    socks = [socket.create_connection((url.host, url.port), timeout=10) for _ in range(3)]
    try:
        for sock in socks[:2]:
            sock.sendall(head.encode() + first)
        wait_until(lambda: redis.zcard(keys.uploads("image", "a")) == 2, what="two bodies' room to be reserved")
        socks[2].sendall(head.encode() + first)
        assert socks[2].recv(4096).startswith(b"HTTP/1.1 429 ")
        assert post_image(api, "b", cat_png).status_code == 201
        assert redis.zcard(keys.uploads("image", "a")) == 2
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: redis.zcard(keys.uploads("image", "a")) == 0, what="the reservations to be released")
    chunked = httpx.post(
        f"{api}/randomize", content=iter([cat_png[:5000], cat_png[5000:]]), headers={"X-Client-Id": "a"}
    )
    assert chunked.status_code == 201, chunked.text  # and a chunked image that fits is stored, at its own size
    assert int(redis.hget(keys.HELD_BYTES, "a")) == held_for(redis, cat_png)
    assert Doctor(redis).check() == []
