"""Big bodies stream through the API, an upload to the uploads store and a result from
Redis to its client: the API's memory stays flat."""

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from backend.core.job import Lane
from backend.core.kinds import RANDOMIZE
from backend.jobs import keys
from backend.jobs.queue import JobQueue, QueuePolicy
from backend.jobs.store import JobStore, Staged, Submission
from compute.defaults import MiB
from compute.redis_values import write_value
from tests.images import png_bytes
from tests.servers import api_process

T = TypeVar("T")

UPLOAD_BYTES = 256 * MiB
CHUNK = b"1234567 " * (1024 * 128)  # 1 MiB of valid numbers


@pytest.mark.slow
def test_api_memory_stays_flat_during_a_large_upload(settings, tmp_path):
    with api_process(settings.redis_url, tmp_path) as (api, url):
        body = (CHUNK for _ in range(UPLOAD_BYTES // len(CHUNK)))
        headers = {"Content-Type": "text/plain"}
        response, growth = rss_growth(
            api.pid, lambda: httpx.post(f"{url}/even-sum", content=body, headers=headers, timeout=120)
        )
    assert response.status_code == 201
    token = response.json()["token"]
    assert (tmp_path / "uploads" / f"{token}.txt").stat().st_size == UPLOAD_BYTES
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
        result = f"{url}/randomize/{token}/result"
        httpx.get(result, timeout=60)  # warm: the first request's imports
        with ThreadPoolExecutor(8) as pool:
            digests, growth = rss_growth(api.pid, lambda: list(pool.map(lambda _: fetched_digest(result), range(8))))
    assert digests == [hashlib.sha256(output).hexdigest()] * 8
    assert growth < len(output), f"API grew by {growth / 2**20:.0f} MiB for 8 fetches of a 128 MiB result"


@pytest.mark.slow
def test_api_memory_stays_flat_while_large_images_stream_in_at_once(settings, tmp_path):
    """An image kept as a file is written as it arrives, a MiB at a time: 8 noise PNGs of
    15 MiB sent at once cost the API a few MiB each, not their bodies (8-23 MiB measured;
    190 MiB when each was read whole first, as an image kept in Redis still is)."""
    noise = np.random.default_rng(1).integers(0, 256, (2300, 2300, 3), dtype=np.uint8)
    png = png_bytes(Image.fromarray(noise), compress_level=1)
    env = {"SPACETIME_DEFAULT_RATE": "0"}  # 8 clients: each one's held bytes fit one image
    with api_process(settings.redis_url, tmp_path, **env) as (api, url):

        def post(client: str) -> int:
            body = (png[at : at + 65536] for at in range(0, len(png), 65536))  # chunked: no length
            response = httpx.post(f"{url}/randomize", content=body, headers={"X-Client-Id": client}, timeout=120)
            return response.status_code

        post("warm")  # the first request's imports
        with ThreadPoolExecutor(8) as pool:
            answers, growth = rss_growth(api.pid, lambda: list(pool.map(post, [f"c{n}" for n in range(8)])))
    assert answers == [201] * 8
    assert len(list((tmp_path / "uploads" / "images").glob("*.png"))) == 9
    assert growth < 64 * MiB, f"API grew by {growth / 2**20:.0f} MiB for 8 images of {len(png) >> 20} MiB at once"


def fetched_digest(url: str) -> str:
    """The SHA-256 of the body at ``url``, read as it streams (this side holds no body either)."""
    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            digest.update(chunk)
    return digest.hexdigest()


def rss_growth(pid: int, action: Callable[[], T]) -> tuple[T, int]:
    """What ``action`` returns, and how far process ``pid``'s resident memory rose over
    its start while it ran (sampled every 20 ms)."""
    process = psutil.Process(pid)
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return action(), peak[0] - baseline
    finally:
        done.set()
        sampler.join()
