"""A big upload streams through the API to the uploads store: the API's memory stays flat."""

import os
import subprocess
import sys
import threading

import httpx
import psutil

from tests.helpers import free_port, wait_until

UPLOAD_BYTES = 256 * 1024 * 1024
CHUNK = b"1234567 " * (1024 * 128)  # 1 MiB of valid numbers


def test_api_memory_stays_flat_during_a_large_upload(settings, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "SPACETIME_API_PORT": str(port),
        "SPACETIME_DATA_DIR": str(tmp_path),
    }
    api = subprocess.Popen([sys.executable, "-m", "backend.cli", "api"], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), what="the API")
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
        assert growth < 64 * 1024 * 1024, f"API grew by {growth / 2**20:.0f} MiB for a {UPLOAD_BYTES >> 20} MiB upload"
    finally:
        api.terminate()
        api.wait(10)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code in (200, 503)
    except httpx.TransportError:
        return False
