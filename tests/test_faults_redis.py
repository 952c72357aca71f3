"""Redis killed (SIGKILL) and restarted under load: every accepted job still ends, the API
answers 503 meanwhile and recovers by itself, dispatchers say so in two log lines."""

import io
import logging
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from redis import Redis

from backend.job import FINAL
from backend.store import JobStore
from tests.helpers import live_api, own_redis, wait_until

JOBS = 200


def small_png() -> bytes:
    pixels = np.random.default_rng(7).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_redis_killed_and_restarted_under_load_loses_no_job(make_settings, start_dispatcher, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="backend.dispatcher")
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
            logged = [r for r in caplog.records if r.name == "backend.dispatcher"]  # before Redis stops for good
    assert [j.status for j in jobs] == ["finished"] * JOBS  # 0 lost, 0 failed
    rerun = sum(j.attempts > 1 for j in jobs)
    print(f"\n{JOBS} jobs, redis-server SIGKILLed and restarted: {JOBS} final, 0 lost, {rerun} claimed twice")
    messages = [r.getMessage() for r in logged]
    outages = [m for m in messages if m.startswith("Redis is unreachable")]
    assert 1 <= len(outages) <= len(dispatchers)  # one line per dispatcher, not one per retry
    assert len([m for m in messages if m.startswith("Redis is back")]) == len(outages)
    assert not [r for r in logged if r.exc_info], "a traceback was logged"
