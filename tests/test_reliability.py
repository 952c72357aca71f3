"""No lost jobs: dispatchers killed or stopped while they hold one; TTLs; no pickle."""

import json
import os
import signal
import subprocess
import sys

import pytest
from distributed import LocalCluster

from backend import keys
from backend.dispatcher import Dispatcher
from backend.store import JobStore
from tests.helpers import wait_until


@pytest.fixture
def idle_scheduler():
    """A scheduler with no workers: a dispatcher using it holds its job forever."""
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=":0") as c:
        yield c.scheduler_address


def start_dispatcher_process(settings, scheduler_address: str, **env) -> subprocess.Popen:
    environment = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DASK_SCHEDULER_ADDRESS": scheduler_address,
        "SPACETIME_LEASE_S": str(settings.lease_s),
        "SPACETIME_DATA_DIR": str(settings.data_dir),
        **env,
    }
    return subprocess.Popen([sys.executable, "-m", "backend.cli", "dispatcher"], env=environment)


def held_by_process(redis, token: str, process: subprocess.Popen) -> str:
    """The id of the dispatcher whose processing list holds ``token``, once it is received."""
    assert process.poll() is None, "the dispatcher process died"
    record = json.loads(redis.get(keys.result(token)))
    if record["status"] != "received":
        return ""
    return record["dispatcher"] if token.encode() in redis.lrange(keys.processing(record["dispatcher"]), 0, -1) else ""


def test_killed_dispatcher_loses_no_job(settings, redis, dask_client, idle_scheduler, cat_png):
    store = JobStore(redis, settings.result_ttl_s)
    token = store.submit("randomize", input_bytes=cat_png).token
    process = start_dispatcher_process(settings, idle_scheduler)
    try:
        dead_id = wait_until(lambda: held_by_process(redis, token, process), what="the job to be held")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    rescuer = Dispatcher(settings, dask_client)
    rescuer.start()
    try:
        wait_until(lambda: store.get(token).status == "finished", what="the job to finish")
    finally:
        rescuer.stop()
    job = store.get(token)
    assert job.attempts == 2 and job.dispatcher == rescuer.id
    assert store.output(token).startswith(b"\x89PNG")
    assert not redis.exists(keys.processing(dead_id))
    assert dead_id.encode() not in redis.smembers(keys.DISPATCHERS)


def test_sigterm_hands_back_what_it_cannot_finish(settings, redis, idle_scheduler, cat_png):
    store = JobStore(redis, settings.result_ttl_s)
    token = store.submit("randomize", input_bytes=cat_png).token
    process = start_dispatcher_process(settings, idle_scheduler, SPACETIME_SHUTDOWN_GRACE_S="0.5")
    try:
        wait_until(lambda: held_by_process(redis, token, process), what="the job to be held")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        process.kill()
    assert redis.lrange(keys.TASKS, 0, -1) == [token.encode()]
    assert not redis.exists(keys.DISPATCHERS)


def test_result_is_written_once(settings, redis, cat_png):
    store = JobStore(redis, settings.result_ttl_s)
    token = store.submit("randomize", input_bytes=cat_png).token
    assert store.finish(token, "a", b"first")
    assert not store.finish(token, "b", b"second")
    assert not store.fail(token, "b", "late failure")
    assert store.output(token) == b"first" and store.get(token).status == "finished"


def test_every_key_has_a_ttl_and_nothing_is_pickled(api_url, redis, dispatcher, cat_png):
    import httpx

    from tests.helpers import wait_status

    for _ in range(3):
        token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
        wait_status(api_url, "randomize", token)
    httpx.post(f"{api_url}/randomize", content=b"not a png")
    names = redis.keys("*")
    assert names
    for name in names:
        assert redis.ttl(name) > 0, f"{name!r} has no TTL"
        if redis.type(name) == b"string":
            value = redis.get(name)
            assert not value.startswith(b"\x80"), f"{name!r} looks pickled"
            if name.startswith(b"result:") and not name.endswith(b":output"):
                assert json.loads(value)["token"] in name.decode()
