"""Big bodies stream through the API, an upload to the uploads store and a result from
Redis to its client: the API's memory stays flat."""

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest

from backend.core.job import Lane
from backend.core.kinds import RANDOMIZE
from backend.jobs import keys
from backend.jobs.queue import JobQueue, QueuePolicy
from backend.jobs.store import JobStore, Staged, Submission
from compute.defaults import MiB
from compute.redis_values import write_value
from tests.servers import api_process

UPLOAD_BYTES = 256 * MiB
CHUNK = b"1234567 " * (1024 * 128)  # 1 MiB of valid numbers


@pytest.mark.slow
def test_api_memory_stays_flat_during_a_large_upload(settings, tmp_path):
    with api_process(settings.redis_url, tmp_path) as (api, url):
        process = psutil.Process(api.pid)
        baseline = process.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample():
            while not done.wait(0.02):
                peak[0] = max(peak[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        body = (CHUNK for _ in range(UPLOAD_BYTES // len(CHUNK)))
        response = httpx.post(f"{url}/even-sum", content=body, headers={"Content-Type": "text/plain"}, timeout=120)
        done.set()
        sampler.join()
        assert response.status_code == 201
        token = response.json()["token"]
        assert (tmp_path / "uploads" / f"{token}.txt").stat().st_size == UPLOAD_BYTES
        growth = peak[0] - baseline
        assert growth < 64 * MiB, f"API grew by {growth / 2**20:.0f} MiB for a {UPLOAD_BYTES >> 20} MiB upload"


@pytest.mark.slow
def test_api_memory_stays_flat_while_a_large_result_is_fetched_many_times_at_once(redis, settings, tmp_path):
    """A result is sent a piece at a time as it is read from Redis: 8 fetches at once of
    a 128 MiB output (an image's may be 256 MB within its client's bound) cost the API
    less than the output once (46-51 MiB measured for 64 MiB), not 8 of them and their
    copies (883 MiB for 64 MiB when each was read whole first)."""
    store = JobStore(redis, 600)
    token = store.submit(Submission(RANDOMIZE, "a", input_bytes=b"png", bytes=3)).token
    job = JobQueue(redis, "d1", settings.lease_s, QueuePolicy.of(settings)).claim(Lane.interactive).job
    output = np.random.default_rng(1).integers(0, 256, 128 * MiB, dtype=np.uint8).tobytes()
    write_value(redis, keys.staged(token, "d1", job.attempts), output, 600)
    store.finish(job, Staged(keys.staged(token, "d1", job.attempts)))
    with api_process(settings.redis_url, tmp_path) as (api, url):
        process = psutil.Process(api.pid)
        httpx.get(f"{url}/randomize/{token}/result", timeout=60)  # warm: the first request's imports
        baseline = process.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample():
            while not done.wait(0.02):
                peak[0] = max(peak[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        with ThreadPoolExecutor(8) as pool:
            digests = list(pool.map(lambda _: fetched_digest(f"{url}/randomize/{token}/result"), range(8)))
        done.set()
        sampler.join()
    assert digests == [hashlib.sha256(output).hexdigest()] * 8
    growth = peak[0] - baseline
    assert growth < len(output), f"API grew by {growth / 2**20:.0f} MiB for 8 fetches of a 128 MiB result"


def fetched_digest(url: str) -> str:
    """The SHA-256 of the body at ``url``, read as it streams (this side holds no body either)."""
    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            digest.update(chunk)
    return digest.hexdigest()
