"""Cancelling jobs (DELETE /tasks/{token}) with a live API, Redis, dispatchers and Dask:
queued and running jobs end `errored` and `cancelled` at once, their counters are released
in the same step, their tasks leave the cluster within a block's time, and nothing brings
them back (a reaper, a late final write, a second DELETE)."""

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from backend.core.job import Lane
from backend.dispatch.cancels import Cancels
from backend.jobs import keys
from backend.jobs.queue import JobQueue, QueuePolicy
from backend.jobs.store import EndResult, JobStore
from tests.test_clients import bearer
from tests.test_embedded import gradient_png
from tests.test_reliability import counters, start_dispatcher_process
from tests.waiting import wait_status, wait_until

CANCELLED = {"status": "errored", "error": "cancelled by the client"}
# 1 KiB blocks in tests: a file of ~2,400 blocks runs for seconds on the test cluster.
MANY_BLOCKS = b"\n".join(b"%d" % i for i in range(400_000))


def even_sum(api: str, data: bytes, headers: dict | None = None) -> str:
    response = httpx.post(f"{api}/even-sum", content=data, headers={"Content-Type": "text/plain", **(headers or {})})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def cancel(api: str, token: str, headers: dict | None = None) -> httpx.Response:
    return httpx.delete(f"{api}/tasks/{token}", headers=headers, timeout=30)


def assert_cancelled(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    record = response.json()
    assert {k: record[k] for k in CANCELLED} == CANCELLED and record["cancelled"] is True
    return record


def job_tasks(cluster, token: str, kind: str = "even-sum") -> list[str]:
    """The keys the scheduler holds for the job's tasks."""
    return [str(key) for key in list(cluster.scheduler.tasks) if str(key).startswith(f"{kind}-{token}")]


def progress(redis, token: str) -> float:
    record = JobStore(redis, 60).get(token)
    return record.progress.done / record.progress.total if record.progress else 0.0


def test_queued_jobs_end_at_once_wherever_they_wait(api_url, redis, settings):
    """Behind others in its client's queue, or not yet routed from `tasks`: the counters of
    the queue hold what is left, and a second DELETE answers the same record."""
    tokens = [even_sum(api_url, b"2 4 " * 500) for _ in range(3)]  # 2 blocks each
    queue = JobQueue(redis, "test-dispatcher", 60, QueuePolicy.of(settings))
    claimed = queue.claim(Lane.bulk)  # routes all three, takes the first
    assert claimed is not None and claimed.job.token == tokens[0]
    unrouted = even_sum(api_url, b"6 8")

    first = assert_cancelled(cancel(api_url, tokens[1]))
    assert cancel(api_url, tokens[1]).json() == first
    assert redis.lrange(keys.queue(Lane.bulk, "anonymous"), 0, -1) == [tokens[2].encode()]
    assert redis.hget(keys.backlog_blocks(Lane.bulk), "anonymous") == b"2"
    assert_cancelled(cancel(api_url, unrouted))
    assert redis.llen(keys.TASKS) == 0
    assert wait_status(api_url, "even-sum", unrouted)[-1] == CANCELLED

    assert_cancelled(cancel(api_url, tokens[2]))
    assert_cancelled(cancel(api_url, tokens[0]))  # received: it leaves the processing list
    assert not counters(redis)
    left = (keys.ring(Lane.bulk), keys.processing("test-dispatcher"), keys.queue(Lane.bulk, "anonymous"))
    assert not redis.exists(*left)
    # The attempt that held it cannot bring it back.
    store = JobStore(redis, settings.result_ttl_s)
    assert store.finish(claimed.job, b"{}") is EndResult.final
    assert not store.requeue(claimed.job, "lost")
    assert store.get(tokens[0]).status == "errored"


def test_only_its_client_may_cancel_and_an_ended_job_is_a_409(make_settings, start_api, redis, dispatcher):
    from backend.jobs.clients import ClientRegistry

    settings = make_settings(auth="keys")
    api = start_api(settings)
    registry = ClientRegistry(redis, settings)
    alice, bob = bearer(registry.add("alice")), bearer(registry.add("bob"))
    token = even_sum(api, b"2 4", alice)
    assert wait_status(api, "even-sum", token, headers=alice)[-1] == {"status": "finished"}
    mine = cancel(api, token, alice)
    assert mine.status_code == 409 and "already ended (finished)" in mine.json()["error"]
    for headers in (bob, None):
        assert cancel(api, token, headers).status_code in (404, 401)
    assert cancel(api, "0" * 32, alice).json() == {"message": "not found"}


def uploads(settings) -> list[str]:
    folder = Path(settings.uploads_url.removeprefix("file://"))
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_a_cancelled_jobs_upload_goes_with_it_unless_kept(api_url, settings):
    """No dispatcher ever takes a job cancelled while queued: the cancel deletes its file."""
    dropped = even_sum(api_url, b"2 4")
    kept = httpx.post(f"{api_url}/even-sum?keep_input=true", content=b"6 8", headers={"Content-Type": "text/plain"})
    assert uploads(settings) == sorted([f"{dropped}.txt", f"{kept.json()['token']}.txt"])
    for token in (dropped, kept.json()["token"]):
        assert_cancelled(cancel(api_url, token))
    assert uploads(settings) == [f"{kept.json()['token']}.txt"]
    assert_cancelled(cancel(api_url, dropped))  # again: the same record, nothing left to delete


def test_a_running_even_sum_stops_within_a_block_and_leaves_nothing(api_url, redis, settings, dispatcher, cluster):
    token = even_sum(api_url, MANY_BLOCKS)
    wait_until(lambda: progress(redis, token) >= 0.3, what="30% of the blocks")
    record = assert_cancelled(cancel(api_url, token))
    assert 0.3 <= record["progress"]["done"] / record["progress"]["total"] < 1
    assert uploads(settings) == []  # its upload went with it
    # A bound, not a timing: on a quiet machine they leave within a block's time (docs/clients.md).
    wait_until(lambda: not job_tasks(cluster, token), timeout_s=30, what="the job's tasks to leave the scheduler")
    assert not counters(redis)
    time.sleep(1)  # a late progress or final write would show now
    assert httpx.get(f"{api_url}/tasks/{token}").json() == record
    assert not job_tasks(cluster, token)


def test_a_running_image_ends_cancelled_and_its_late_result_is_dropped(
    api_url, redis, make_settings, start_dispatcher, cluster
):
    """An image is one task, which cannot be stopped halfway: the job ends cancelled at once,
    and when the task ends its result is refused (the staged output deleted), the record
    stays as the cancel left it, and the client holds in Redis only that record."""
    # 24 MP in blocks of 4 px: a shuffle of about 0.5 s, time for the cancel to come while
    # it runs (0.1 s in the default 60 px blocks, which a loaded machine's cancel missed)
    start_dispatcher(make_settings(image_block_px=4))
    image = gradient_png(6000, 4000)
    response = httpx.post(f"{api_url}/randomize", content=image, headers={"Content-Type": "image/png"})
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    wait_until(lambda: JobStore(redis, 60).get(token).status == "received", what="the image to run")
    record = assert_cancelled(cancel(api_url, token))
    assert redis.exists(keys.input_(token)) == 0
    wait_until(lambda: not job_tasks(cluster, token, "randomize"), timeout_s=60, what="the image's task to end")
    wait_until(lambda: not redis.keys(f"staged:{token}:*"), what="its staged output to be dropped")
    assert httpx.get(f"{api_url}/tasks/{token}").json() == record
    assert httpx.get(f"{api_url}/randomize/{token}/result").status_code != 200
    assert not redis.exists(keys.output(token))
    record_cost = redis.memory_usage(keys.result(token)) + keys.HELD_ENTRY_BYTES  # all it keeps: no input, no output
    assert int(redis.hget(keys.HELD_BYTES, "anonymous")) == record_cost and not counters(redis)


@pytest.mark.slow
def test_a_job_of_a_killed_dispatcher_stays_cancelled(api_url, redis, settings, cluster, start_dispatcher):
    """The dispatcher that ran it is SIGKILLed first: the cancel takes the job out of the
    dead one's processing list, so the reaper of a live dispatcher has nothing to requeue."""
    token = even_sum(api_url, MANY_BLOCKS)
    process = start_dispatcher_process(settings, cluster.scheduler_address)
    try:
        wait_until(lambda: progress(redis, token) >= 0.3, timeout_s=60, what="30% of the blocks")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    dead = JobStore(redis, 60).get(token).dispatcher
    assert redis.lrange(keys.processing(dead or ""), 0, -1) == [token.encode()]
    record = assert_cancelled(cancel(api_url, token))
    assert not counters(redis)

    rescuer = start_dispatcher(settings)
    wait_until(lambda: redis.zscore(keys.DISPATCHERS, dead) is None, what="the dead dispatcher to be reaped")
    time.sleep(2 * settings.lease_s)
    assert httpx.get(f"{api_url}/tasks/{token}").json() == record
    assert not counters(redis) and rescuer.id != dead
    wait_until(lambda: not job_tasks(cluster, token), timeout_s=10, what="the dead client's tasks to go")


def test_a_missed_cancel_message_is_found_in_the_record_at_the_next_heartbeat(redis):
    """Pub/sub loses what is published while a dispatcher's subscription is down: the
    heartbeat's check reads the records of the jobs it runs."""
    cancels = Cancels(redis)
    redis.set(keys.result("running"), json.dumps({"token": "running", "status": "received"}))
    with cancels.watch("running"):
        cancelled = cancels.asker("running")
        cancels.check()
        assert not cancelled()
        redis.set(keys.result("running"), json.dumps({"token": "running", "status": "errored", "cancelled": True}))
        cancels.check()
        assert cancelled()
    assert not cancels.asker("running")()  # forgotten once no loop runs it
