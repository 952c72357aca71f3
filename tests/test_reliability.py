"""No lost jobs: dispatchers killed, stopped or stalled while they hold one; attempts capped;
only the holder writes a result; every key has a TTL unless keys.py says why not; no pickle."""

import fnmatch
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import cast

import httpx
import psutil
import pytest
from distributed import LocalCluster

from backend.core.job import Lane
from backend.core.kinds import EVEN_SUM, RANDOMIZE
from backend.dispatch.dispatcher import Dispatcher, stopping_bound_s
from backend.jobs import keys
from backend.jobs.queue import JobQueue, QueuePolicy
from backend.jobs.store import EndResult, JobStore, Staged, Submission
from compute.redis_values import read_value, write_value
from tests.waiting import wait_status, wait_until


@pytest.fixture
def idle_scheduler():
    """A scheduler with no workers: a dispatcher using it holds its job until it gives up."""
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=":0") as c:
        yield c.scheduler_address


def start_dispatcher_process(settings, scheduler_address: str, **env) -> subprocess.Popen:
    environment = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DASK_SCHEDULER_ADDRESS": scheduler_address,
        "SPACETIME_LEASE_S": str(settings.lease_s),
        "SPACETIME_DATA_DIR": str(settings.data_dir),
        "SPACETIME_EVEN_SUM_BLOCK_BYTES": str(settings.even_sum_block_bytes),
        **env,
    }
    return subprocess.Popen([sys.executable, "-m", "backend.run.cli", "dispatcher"], env=environment)


def held_by_process(redis, token: str, process: subprocess.Popen) -> str:
    """The id of the dispatcher whose processing list holds ``token``, once it is received."""
    assert process.poll() is None, "the dispatcher process died"
    record = json.loads(redis.get(keys.result(token)))
    if record["status"] != "received":
        return ""
    return record["dispatcher"] if token.encode() in redis.lrange(keys.processing(record["dispatcher"]), 0, -1) else ""


def image_job(store: JobStore, png: bytes, client: str = "anonymous") -> str:
    return store.submit(Submission(RANDOMIZE, client, input_bytes=png, bytes=len(png))).token


def counters(redis) -> dict[str, dict]:
    """Every counter of the queues that is not zero (they drop their fields at zero)."""
    names = [keys.BACKLOG_BYTES] + [key(lane) for lane in Lane for key in (keys.running, keys.backlog_blocks)]
    return {name: redis.hgetall(name) for name in names if redis.hgetall(name)}


def killed_while_holding(redis, settings, scheduler: str, token: str, check=None) -> str:
    """Start a dispatcher process, SIGKILL it once it holds ``token`` (after ``check()``);
    return its id."""
    process = start_dispatcher_process(settings, scheduler)
    try:
        dead_id = wait_until(lambda: held_by_process(redis, token, process), what="the job to be held")
        if check:
            check()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return dead_id


@pytest.mark.slow
def test_killed_dispatcher_loses_no_job(settings, redis, dask_client, idle_scheduler, cat_png):
    store = JobStore(redis, settings.result_ttl_s)
    token = image_job(store, cat_png)
    dead_id = killed_while_holding(redis, settings, idle_scheduler, token)
    rescuer = Dispatcher(settings, dask_client)
    rescuer.start()
    try:
        wait_until(lambda: store.get(token).status == "finished", what="the job to finish")
    finally:
        rescuer.stop()
    job = store.get(token)
    assert job.attempts == 2 and job.dispatcher == rescuer.id
    assert "stopped renewing its lease" in job.last_error
    assert store.output(token).startswith(b"\x89PNG")
    assert not redis.exists(keys.processing(dead_id))
    assert redis.zscore(keys.DISPATCHERS, dead_id) is None


@pytest.mark.slow
def test_killed_dispatcher_holding_a_bulk_job_leaves_every_counter_at_zero(
    settings, redis, dask_client, idle_scheduler, tmp_path
):
    numbers = tmp_path / "numbers.txt"
    numbers.write_bytes(b"4 " * 5000)  # 10 blocks of 1 KiB
    store = JobStore(redis, settings.result_ttl_s)
    token = store.submit(Submission(EVEN_SUM, "a", cost=10, bytes=10_000, input_url=numbers.as_uri())).token

    def held_and_counted() -> None:
        assert counters(redis)[keys.running(Lane.bulk)] == {b"a": b"1"}

    killed_while_holding(redis, settings, idle_scheduler, token, held_and_counted)
    rescuer = Dispatcher(settings, dask_client)
    rescuer.start()
    try:
        wait_until(lambda: store.get(token).status == "finished", what="the job to finish")
        assert json.loads(store.output(token))["sum"] == 4 * 5000
        wait_until(lambda: not counters(redis), what="the counters to return to zero")
    finally:
        rescuer.stop()
    assert not redis.exists(keys.queue(Lane.bulk, "a")) and not redis.exists(keys.ring(Lane.bulk))


@pytest.mark.slow
def test_sigterm_hands_back_what_it_cannot_finish(settings, redis, idle_scheduler, cat_png):
    store = JobStore(redis, settings.result_ttl_s)
    token = image_job(store, cat_png)
    process = start_dispatcher_process(settings, idle_scheduler, SPACETIME_SHUTDOWN_GRACE_S="0.5")
    try:
        wait_until(lambda: held_by_process(redis, token, process), what="the job to be held")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        process.kill()
    assert redis.lrange(keys.queue(Lane.interactive, "anonymous"), 0, -1) == [token.encode()]
    job = store.get(token)
    assert job.status == "requested" and job.attempts == 0  # a graceful hand-back costs no attempt
    assert not redis.exists(keys.DISPATCHERS)


@pytest.mark.slow
def test_a_stop_that_cannot_finish_ends_within_its_bound(settings, redis):
    """SIGTERM while the dispatcher waits on a scheduler that never answers (a loopback
    port that takes connections and stays silent; `up` SIGKILLed leaves its dispatchers
    such a wait): it exits at its bound, not when the Dask client gives up."""
    stopping = settings.model_copy(update={"shutdown_grace_s": 0.5})
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        address = f"tcp://127.0.0.1:{port}"
        process = start_dispatcher_process(
            settings, address, SPACETIME_SHUTDOWN_GRACE_S=str(stopping.shutdown_grace_s), SPACETIME_DASK_TIMEOUT_S="300"
        )
        try:
            wait_until(lambda: port in peer_ports(process), what="the dispatcher to connect", timeout_s=60)
            process.send_signal(signal.SIGTERM)
            assert process.wait(stopping_bound_s(stopping) + 15) == 1  # forced: not a clean stop
        finally:
            process.kill()


def peer_ports(process: subprocess.Popen) -> set[int]:
    """The ports the process's TCP connections lead to."""
    return {c.raddr.port for c in psutil.Process(process.pid).net_connections("tcp") if c.raddr}


def test_a_job_that_keeps_losing_its_attempts_gives_up(settings, redis, cat_png):
    """A poison job (it kills whatever runs it) ends `errored` after max_attempts."""
    store = JobStore(redis, settings.result_ttl_s)
    token = image_job(store, cat_png)
    for attempt in range(1, settings.max_attempts + 1):
        queue = JobQueue(redis, f"doomed-{attempt}", settings.lease_s, QueuePolicy.of(settings))
        claim = queue.claim(Lane.interactive)
        assert claim is not None and claim.job.attempts == attempt and not claim.gave_up
        # It dies with the job: it never had a lease, so a reaper's scan finds its list.
        JobQueue(redis, "reaper", settings.lease_s, QueuePolicy.of(settings)).reap(scan=True)
    last = JobQueue(redis, "last", settings.lease_s, QueuePolicy.of(settings)).claim(Lane.interactive)
    assert last is not None and last.gave_up
    job = store.get(token)
    assert job.status == "errored"
    assert job.error.startswith(f"gave up after {settings.max_attempts} attempts: its dispatcher stopped renewing")
    assert not counters(redis)


def test_only_the_attempt_that_holds_a_job_writes_its_result(settings, redis, cat_png):
    """A dispatcher that stalled past its lease finds its job held by another: its late
    result is dropped, and the holder's stands."""
    store = JobStore(redis, settings.result_ttl_s)
    token = image_job(store, cat_png)
    policy = QueuePolicy.of(settings)
    stalled = JobQueue(redis, "stalled", settings.lease_s, policy).claim(Lane.interactive)
    JobQueue(redis, "reaper", settings.lease_s, policy).reap(scan=True)  # "stalled" has no lease
    holder = JobQueue(redis, "holder", settings.lease_s, policy).claim(Lane.interactive)
    assert stalled is not None and holder is not None and holder.job.attempts == 2

    assert store.finish(stalled.job, b"late") is EndResult.stale
    assert store.finish(holder.job, b"first") is EndResult.ok
    assert store.fail(holder.job, "again") is EndResult.final
    assert store.output(token) == b"first" and store.get(token).status == "finished"
    assert not counters(redis)


def test_a_stale_attempts_staged_output_is_deleted_and_never_lands(settings, redis, cat_png):
    """Worker tasks store image outputs at their attempt's own staged key: the holder's
    final write renames its key into place; a stale or late attempt's is deleted."""
    store = JobStore(redis, settings.result_ttl_s)
    token = image_job(store, cat_png)
    policy = QueuePolicy.of(settings)
    stalled = JobQueue(redis, "stalled", settings.lease_s, policy).claim(Lane.interactive)
    JobQueue(redis, "reaper", settings.lease_s, policy).reap(scan=True)
    holder = JobQueue(redis, "holder", settings.lease_s, policy).claim(Lane.interactive)
    assert stalled is not None and holder is not None
    late, first = (keys.staged(token, c.job.dispatcher, c.job.attempts) for c in (stalled, holder))
    write_value(redis, late, b"late", keys.STAGED_TTL_S)  # as the workers write them
    write_value(redis, first, b"first", keys.STAGED_TTL_S)

    assert store.finish(stalled.job, Staged(late)) is EndResult.stale
    assert not redis.exists(late) and read_value(redis, first) == b"first"
    assert store.finish(holder.job, Staged(first)) is EndResult.ok
    assert not redis.exists(first) and store.output(token) == b"first"
    assert redis.ttl(keys.output(token)) > keys.STAGED_TTL_S  # the result's TTL, not the staged one's
    write_value(redis, late, b"later", keys.STAGED_TTL_S)  # the stalled task ran again
    assert store.finish(stalled.job, Staged(late)) is EndResult.final
    assert not redis.exists(late) and store.output(token) == b"first"
    assert store.get(token).status == "finished" and not redis.exists(keys.input_(token))
    assert not counters(redis)


def test_a_staged_output_that_is_gone_ends_the_job_errored_not_finished_without_output(settings, redis, cat_png):
    store = JobStore(redis, settings.result_ttl_s)
    token = image_job(store, cat_png)
    claim = JobQueue(redis, "holder", settings.lease_s, QueuePolicy.of(settings)).claim(Lane.interactive)
    assert claim is not None
    never_written = keys.staged(token, claim.job.dispatcher, claim.job.attempts)
    assert store.finish(claim.job, Staged(never_written)) is EndResult.ok
    job = store.get(token)
    assert job.status == "errored"
    assert job.error == "the result was lost before it could be stored; submit the job again"
    assert store.output(token) is None and not redis.exists(keys.input_(token))
    assert not counters(redis)


def test_every_key_has_a_ttl_during_and_after_jobs_and_nothing_is_pickled(api_url, redis, dispatcher, cat_png):
    seen: dict[bytes, int] = {}
    done = threading.Event()

    def watch() -> None:  # keys that live only while a job runs (processing lists...) count too
        while not done.is_set():
            for name in cast(list[bytes], redis.keys("*")):
                seen.setdefault(name, redis.ttl(name))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
            wait_status(api_url, "randomize", token)
        httpx.post(f"{api_url}/randomize", content=b"not a png")
    finally:
        done.set()
        watcher.join()
    assert any(name.startswith(b"processing:") for name in seen), "the watcher missed the jobs running"
    until_final = [template.format(token="?" * 32) for template in keys.UNTIL_FINAL]
    for name, ttl in seen.items():
        exempt = any(fnmatch.fnmatch(name.decode(), pattern) for pattern in keys.WITHOUT_TTL)
        if any(fnmatch.fnmatch(name.decode(), pattern) for pattern in until_final):
            ttl = redis.ttl(name)  # a live job's record and input: a TTL once it ended, or gone
        assert exempt or ttl != -1, f"{name!r} was created without a TTL"
    for name in cast(list[bytes], redis.keys("*")):
        if redis.type(name) == b"string":
            value = redis.get(name)
            assert not value.startswith(b"\x80"), f"{name!r} looks pickled"
            if name.startswith(b"result:") and not name.endswith(b":output"):
                assert json.loads(value)["token"] in name.decode()
