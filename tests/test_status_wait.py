"""Status requests that wait for their job to end (``?wait=S``), through a live uvicorn on a
real Redis and Dask: woken by the final write's PUBLISH, or answered after S; refused out of
range; no waiter left behind; and a Redis restart that waits ride out.

Where a test shows that a wait was *woken*, the job is made to end only once the request
is waiting (the gauge of /metrics says so) and the client gives up long before S: the
answer can only have come from the ending."""

import asyncio
import json
import logging
import threading
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from backend.api.endings import Endings
from backend.core.exceptions import JobNotFound
from backend.core.job import Lane
from backend.core.kinds import RANDOMIZE
from backend.jobs import keys
from backend.jobs.clients import ClientRegistry
from backend.jobs.queue import JobQueue, QueuePolicy
from backend.jobs.store import JobStore, Submission
from tests.servers import live_api, own_redis
from tests.waiting import wait_until

# Longer than any answer of these tests may take, much shorter than the waits they ask for.
CLIENT_TIMEOUT_S = 15
LONG_WAIT_S = 30


def waiters(api_url: str) -> float:
    """The API's gauge of status requests waiting now."""
    families = text_string_to_metric_families(httpx.get(f"{api_url}/metrics").text)
    return next(s.value for family in families for s in family.samples if s.name == "spacetime_status_waiters")


def in_background(call: Callable[[], httpx.Response]) -> Callable[[], httpx.Response]:
    """Run ``call`` in a thread; returns a function that joins it and gives its response."""
    answer: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answer.append(call()), daemon=True)
    thread.start()

    def result() -> httpx.Response:
        thread.join(CLIENT_TIMEOUT_S + 5)
        assert answer, "the waiting request raised or never answered"
        return answer[0]

    return result


def wait_for(api_url: str, path: str, wait_s: float = LONG_WAIT_S, **kwargs) -> httpx.Response:
    return httpx.get(f"{api_url}{path}", params={"wait": wait_s}, timeout=CLIENT_TIMEOUT_S, **kwargs)


def test_a_waiting_status_is_woken_when_its_job_finishes(api_url, settings, start_dispatcher, cat_png):
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    status = in_background(lambda: wait_for(api_url, f"/randomize/{token}/status"))
    record = in_background(lambda: wait_for(api_url, f"/tasks/{token}"))
    wait_until(lambda: waiters(api_url) == 2, what="both requests to wait")
    start_dispatcher(settings)
    assert status().json() == {"status": "finished"}
    assert record().json()["status"] == "finished"
    result = httpx.get(f"{api_url}/randomize/{token}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert waiters(api_url) == 0


def test_a_waiting_result_comes_when_its_job_finishes(api_url, settings, start_dispatcher, cat_png):
    """POST, then one GET of the result with ?wait=: two requests a job, no status poll."""
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    result = in_background(lambda: wait_for(api_url, f"/randomize/{token}/result"))
    wait_until(lambda: waiters(api_url) == 1, what="the request to wait")
    start_dispatcher(settings)
    answer = result()
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content == httpx.get(f"{api_url}/randomize/{token}/result").content
    assert waiters(api_url) == 0


def test_a_waiting_result_of_a_job_that_does_not_finish_is_404(api_url, settings, start_dispatcher, cat_png):
    corrupt = cat_png[:100] + b"\x00" * 500 + cat_png[600:]
    errored = httpx.post(f"{api_url}/randomize", content=corrupt).json()["token"]
    waiting = httpx.post(f"{api_url}/even-sum", content=b"2", headers={"Content-Type": "text/plain"}).json()["token"]
    assert wait_for(api_url, f"/even-sum/{waiting}/result", 0.3).status_code == 404  # no dispatcher yet
    result = in_background(lambda: wait_for(api_url, f"/randomize/{errored}/result"))
    wait_until(lambda: waiters(api_url) == 1, what="the request to wait")
    start_dispatcher(settings)
    assert result().status_code == 404
    assert httpx.get(f"{api_url}/randomize/{errored}/status").json()["status"] == "errored"
    assert wait_for(api_url, f"/even-sum/{waiting}/result").json()["sum"] == 2


def test_an_even_sum_that_ends_answers_its_wait(api_url, dispatcher):
    token = httpx.post(f"{api_url}/even-sum", content=b"2 4 5", headers={"Content-Type": "text/plain"}).json()["token"]
    assert wait_for(api_url, f"/even-sum/{token}/status").json() == {"status": "finished"}
    assert httpx.get(f"{api_url}/even-sum/{token}/result").json()["sum"] == 6


def test_an_errored_job_wakes_its_waiter_too(api_url, settings, start_dispatcher, cat_png):
    corrupt = cat_png[:100] + b"\x00" * 500 + cat_png[600:]
    token = httpx.post(f"{api_url}/randomize", content=corrupt).json()["token"]
    status = in_background(lambda: wait_for(api_url, f"/randomize/{token}/status"))
    wait_until(lambda: waiters(api_url) == 1, what="the request to wait")
    start_dispatcher(settings)
    body = status().json()
    assert body["status"] == "errored" and "corrupt PNG" in body["error"]


def test_a_job_that_cannot_run_is_answered_after_the_wait(api_url, cat_png):
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]  # no dispatcher
    assert wait_for(api_url, f"/randomize/{token}/status", 0.3).json() == {"status": "requested"}
    assert wait_for(api_url, f"/tasks/{token}", 0.3).json()["status"] == "requested"
    assert wait_for(api_url, f"/randomize/{token}/status", 0).json() == {"status": "requested"}
    assert waiters(api_url) == 0


@pytest.mark.parametrize("wait", ["-1", "30.5", "abc", "nan", "inf", ""])
def test_a_wait_out_of_range_is_400_saying_so(api_url, cat_png, wait):
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    paths = [f"/{kind}/{token}/{what}" for kind in ("randomize", "even-sum") for what in ("status", "result")]
    for path in (*paths, f"/tasks/{token}"):
        response = httpx.get(f"{api_url}{path}", params={"wait": wait})
        assert response.status_code == 400, path
        assert "wait" in response.json()["error"], response.json()


def test_another_clients_token_is_404_at_once_with_wait(make_settings, start_api, redis, cat_png):
    settings = make_settings(auth="keys")
    api_url = start_api(settings)
    registry = ClientRegistry(redis, settings)
    alice, bob = ({"Authorization": f"Bearer {registry.add(name)}"} for name in ("alice", "bob"))
    token = httpx.post(f"{api_url}/randomize", content=cat_png, headers=alice).json()["token"]  # no dispatcher
    for path in (f"/randomize/{token}/status", f"/randomize/{token}/result", f"/tasks/{token}"):
        theirs = wait_for(api_url, path, headers=bob)
        assert theirs.status_code == 404 and theirs.json() == {"message": "not found"}
    assert wait_for(api_url, f"/randomize/{token}/status", 0.2, headers=alice).json() == {"status": "requested"}


def test_past_the_bound_of_waiters_a_wait_is_answered_at_once(make_settings, start_api, start_dispatcher, cat_png):
    settings = make_settings(max_status_waiters=1)
    api_url = start_api(settings)
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    first = in_background(lambda: wait_for(api_url, f"/randomize/{token}/status"))
    wait_until(lambda: waiters(api_url) == 1, what="the first request to wait")
    assert wait_for(api_url, f"/randomize/{token}/status").json() == {"status": "requested"}
    start_dispatcher(settings)
    assert first().json() == {"status": "finished"}


def test_a_client_at_its_bound_of_waiters_takes_none_from_another(make_settings, start_api, start_dispatcher, cat_png):
    settings = make_settings(max_status_waiters_per_client=1)
    api_url = start_api(settings)
    a, b = {"X-Client-Id": "a"}, {"X-Client-Id": "b"}
    mine, theirs = (httpx.post(f"{api_url}/randomize", content=cat_png, headers=h).json()["token"] for h in (a, b))
    first = in_background(lambda: wait_for(api_url, f"/randomize/{mine}/status", headers=a))
    wait_until(lambda: waiters(api_url) == 1, what="a's first request to wait")
    # a's second wait is answered at once (no dispatcher: the job is still queued) ...
    assert wait_for(api_url, f"/randomize/{mine}/status", headers=a).json() == {"status": "requested"}
    # ... while b still gets a waiter of its own.
    other = in_background(lambda: wait_for(api_url, f"/randomize/{theirs}/status", headers=b))
    wait_until(lambda: waiters(api_url) == 2, what="b's request to wait")
    start_dispatcher(settings)
    assert first().json() == other().json() == {"status": "finished"}


def test_a_client_that_hangs_up_leaves_no_waiter(api_url, cat_png):
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]  # no dispatcher
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{api_url}/randomize/{token}/status", params={"wait": LONG_WAIT_S}, timeout=0.5)
    wait_until(lambda: waiters(api_url) == 0, timeout_s=CLIENT_TIMEOUT_S, what="the waiter to go")


def test_the_waiter_map_is_empty_after_every_kind_of_wait(redis, redis_url, settings):
    """An ending, a timeout, a client gone, an unknown token, and a process full of waiters:
    each wait leaves the map as it found it."""
    store = JobStore(redis, settings.result_ttl_s)
    token = store.submit(Submission(RANDOMIZE, input_bytes=b"png", bytes=3)).token

    async def read(name: str = token):
        return await asyncio.to_thread(store.get, name)

    async def never() -> None:
        await asyncio.Event().wait()

    async def soon() -> None:
        await asyncio.sleep(0.05)

    async def scenario() -> list[str]:
        endings = Endings(redis_url, max_waiters=1, max_waiters_per_client=1)
        endings.start()
        try:
            await asyncio.to_thread(wait_until, lambda: subscribers(redis) == 1, 10, "the subscription")
            seen = []
            woken = asyncio.create_task(endings.read_when_final(token, read, LONG_WAIT_S, never, "c"))
            while endings.waiting < 1:
                await asyncio.sleep(0.01)
            full = await endings.read_when_final(token, read, LONG_WAIT_S, never, "c")  # over the bound: at once
            assert endings.tokens == 1
            redis.publish(keys.ENDINGS, token)  # as the final write does; the record is still `requested`
            seen += [(await woken).status, full.status]
            seen.append((await endings.read_when_final(token, read, 0.1, never, "c")).status)
            seen.append((await endings.read_when_final(token, read, LONG_WAIT_S, soon, "c")).status)
            with pytest.raises(JobNotFound):
                await endings.read_when_final(token, lambda: read("0123"), LONG_WAIT_S, never, "c")
            assert (endings.tokens, endings.waiting) == (0, 0)
            return seen
        finally:
            await endings.stop()

    assert asyncio.run(scenario()) == ["requested"] * 4


def subscribers(redis: Redis) -> int:
    return dict(redis.pubsub_numsub(keys.ENDINGS))[keys.ENDINGS.encode()]


def test_every_final_write_publishes_its_token(redis, settings):
    """finish.lua (finished and errored), claim.lua's give-up after max attempts and its
    failing of an unreadable record: each PUBLISHes on the endings channel; a requeue does not."""
    store = JobStore(redis, settings.result_ttl_s)
    # One client holds all four jobs at once: no cap on its running images here.
    policy = QueuePolicy.of(settings.model_copy(update={"default_max_running_interactive": 0}))
    queue = JobQueue(redis, "d1", settings.lease_s, policy)
    pubsub = redis.pubsub()
    pubsub.subscribe(keys.ENDINGS)

    def submit() -> str:
        return store.submit(Submission(RANDOMIZE, input_bytes=b"png", bytes=3)).token

    finished, failed, requeued, exhausted = submit(), submit(), submit(), submit()
    claims = {}
    while claim := queue.claim(Lane.interactive):
        claims[claim.job.token] = claim.job
    store.finish(claims[finished], b"out")
    store.fail(claims[failed], "bad input")
    store.requeue(claims[requeued], "lost")
    store.requeue(claims[exhausted], "lost")
    record = json.loads(redis.get(keys.result(exhausted)))
    redis.set(keys.result(exhausted), json.dumps({**record, "attempts": settings.max_attempts}), keepttl=True)
    unreadable = "e" * 32
    redis.set(keys.result(unreadable), b"\x80\x04pickle?", ex=60)
    redis.lpush(keys.TASKS, unreadable)
    while queue.claim(Lane.interactive):
        pass

    messages = list(iter(lambda: pubsub.get_message(timeout=1), None))  # until a second of silence
    pubsub.close()
    published = [m["data"].decode() for m in messages if m["type"] == "message"]
    assert "gave up" in (store.get(exhausted).error or "") and store.get(unreadable).status == "errored"
    assert sorted(published) == sorted([finished, failed, exhausted, unreadable])  # once each; not `requeued`


@pytest.mark.timeout(60)
def test_waits_ride_out_a_redis_restart(make_settings, start_dispatcher, tmp_path, cat_png, caplog):
    caplog.set_level(logging.INFO, logger="backend.api.endings")
    with own_redis(tmp_path) as server:
        settings = make_settings(redis_url=server.url)
        with live_api(settings) as api_url:
            redis = Redis.from_url(server.url)
            wait_until(lambda: subscribers(redis) == 1, what="the API's subscription")
            token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]  # no dispatcher yet
            during = in_background(lambda: wait_for(api_url, f"/randomize/{token}/status", 3))
            wait_until(lambda: waiters(api_url) == 1, what="the request to wait")
            server.stop()  # the subscription drops while the request waits
            server.start()  # same port, same AOF
            assert during().json() == {"status": "requested"}  # answered after its wait, not a 500

            redis = Redis.from_url(server.url)
            wait_until(lambda: subscribers(redis) == 1, what="the subscription to come back")
            start_dispatcher(settings)
            after = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
            assert wait_for(api_url, f"/randomize/{after}/status").json() == {"status": "finished"}
            assert wait_for(api_url, f"/randomize/{token}/status").json() == {"status": "finished"}
    messages = [r.getMessage() for r in caplog.records if r.name == "backend.api.endings"]
    assert len([m for m in messages if "is unreachable" in m]) == 1, messages
    assert len([m for m in messages if "is back" in m]) == 1, messages
