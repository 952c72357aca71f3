"""A big upload streams through the API to the uploads store: the API's memory stays flat."""

import threading

import httpx
import psutil
import pytest

from compute.defaults import MiB
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
