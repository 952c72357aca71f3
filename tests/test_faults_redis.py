"""Redis killed (SIGKILL) and restarted under load: every accepted job still ends, the API
answers 503 meanwhile and recovers by itself, dispatchers say so in two log lines. And a
worker task that cannot reach Redis: its job is held and requeued, never failed."""

import io
import logging
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from redis import Redis

from backend.core.job import FINAL
from backend.core.kinds import RANDOMIZE
from backend.core.settings import Settings
from backend.jobs.store import JobStore, Submission
from compute.stored import REDIS_PASSWORD_ENV
from tests.dask_probes import scheduler_tasks
from tests.servers import live_api, own_redis
from tests.waiting import wait_until

DISPATCHER_LOG = "backend.dispatch.dispatcher"
JOBS = 200
SECRET = "not-for-the-scheduler"


def small_png() -> bytes:
    pixels = np.random.default_rng(7).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_redis_killed_and_restarted_under_load_loses_no_job(make_settings, start_dispatcher, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="backend.dispatch.dispatcher")
    with own_redis(tmp_path) as server:
        settings = make_settings(redis_url=server.url, default_rate=0)  # 200 jobs at once: no rate limit
        dispatchers = [start_dispatcher(settings) for _ in range(2)]
        png = small_png()
        with live_api(settings) as api, httpx.Client(base_url=api, timeout=10) as http:
            tokens = [http.post("/randomize", content=png).json()["token"] for _ in range(JOBS)]
            store = JobStore(Redis.from_url(server.url), settings.result_ttl_s)
            wait_until(lambda: sum(store.get(t).status in FINAL for t in tokens) >= 20, what="some jobs to end")

            server.kill()  # with jobs queued, running and ended
            during = http.post("/randomize", content=png)
            health = http.get("/healthz")
            time.sleep(2)
            server.start()  # same port, same AOF

            assert during.status_code == 503 and "Redis" in during.json()["error"]
            assert health.status_code == 503 and health.json()["redis"] is False
            wait_until(lambda: http.get("/healthz").status_code == 200, timeout_s=30, what="the API to recover")
            assert http.post("/randomize", content=png).status_code == 201

            def ended() -> bool:
                return all(store.get(t).status in FINAL for t in tokens)

            wait_until(ended, timeout_s=120, what="every accepted job to end")
            jobs = [store.get(t) for t in tokens]

            def dispatcher_lines(start: str) -> int:
                return sum(
                    r.getMessage().startswith(start) for r in caplog.records if r.name == "backend.dispatch.dispatcher"
                )

            # A job loop says "back" as it leaves the block whose final write proved it: just
            # after that job shows as ended.
            wait_until(
                lambda: dispatcher_lines("Redis is back") >= dispatcher_lines("Redis is unreachable"),
                timeout_s=30,
                what="each dispatcher to log the end of its outage",
            )
            logged = [
                r for r in caplog.records if r.name == "backend.dispatch.dispatcher"
            ]  # before Redis stops for good
    assert [j.status for j in jobs] == ["finished"] * JOBS  # 0 lost, 0 failed
    rerun = sum(j.attempts > 1 for j in jobs)
    print(f"\n{JOBS} jobs, redis-server SIGKILLed and restarted: {JOBS} final, 0 lost, {rerun} claimed twice")
    messages = [r.getMessage() for r in logged]
    outages = [m for m in messages if m.startswith("Redis is unreachable")]
    assert 1 <= len(outages) <= len(dispatchers)  # one line per dispatcher, not one per retry
    assert len([m for m in messages if m.startswith("Redis is back")]) == len(outages)
    assert not [r for r in logged if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize(
    ("url", "for_tasks"),
    [
        ("rediss://:token@cache.internal:6379/0", "rediss://cache.internal:6379/0"),
        ("redis://user:pw@h:1/2?password=pw&socket_timeout=3", "redis://user@h:1/2?socket_timeout=3"),
        ("unix://:pw@/run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_the_redis_url_that_tasks_get_carries_no_password(url, for_tasks):
    assert Settings(redis_url=url).worker_redis_url == for_tasks


@pytest.mark.timeout(60)
def test_a_worker_without_the_redis_password_holds_the_job_until_it_has_it(
    make_settings, start_dispatcher, cluster, tmp_path, cat_png, monkeypatch
):
    """The dispatcher gives the task Redis's URL without the password (task arguments pass
    through the scheduler); a worker whose environment lacks it fails with a RedisError. The
    attempt is lost, not the job: it goes back to its queue saying why (the dispatcher's
    own Redis is fine, and no outage is logged), never `errored` while attempts are left;
    it finishes once the worker has the password. The secret is nowhere in what the
    scheduler held."""
    monkeypatch.delenv(REDIS_PASSWORD_ENV, raising=False)  # the session's workers run in this process
    with own_redis(tmp_path, password=SECRET) as server:
        settings = make_settings(redis_url=server.url, max_attempts=100)
        store = JobStore(Redis.from_url(server.url), settings.result_ttl_s)
        token = store.submit(Submission(RANDOMIZE, input_bytes=cat_png, bytes=len(cat_png))).token
        with scheduler_tasks(cluster.scheduler, f"randomize-{token}") as seen:
            start_dispatcher(settings)
            wait_until(lambda: store.get(token).attempts >= 2, what="a second attempt")
            job = store.get(token)
            assert job.status in ("requested", "received")
            assert job.last_error == "a worker could not reach Redis", job.last_error
            monkeypatch.setenv(REDIS_PASSWORD_ENV, SECRET)
            wait_until(lambda: store.get(token).status in FINAL, what="the job to end")
        assert store.get(token).status == "finished" and store.output(token).startswith(b"\x89PNG")
    assert len(seen.specs) >= 2 and not [spec for spec in seen.specs.values() if SECRET.encode() in spec]
