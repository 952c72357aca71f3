"""The API process killed (SIGKILL) in the middle of a 1 GiB upload: no job is created,
the partial file is swept when the API starts again, and a retry works."""

import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import api_process, free_port
from tests.waiting import wait_status, wait_until

GiB = 2**30
CHUNK = b"2 " * (512 * 1024)  # 1 MiB of even numbers


def endless_upload(url: str) -> None:
    """POST a declared 1 GiB body; it is cut off by the API's death."""

    def body():
        for _ in range(GiB // len(CHUNK)):
            yield CHUNK

    headers = {"Content-Type": "text/plain", "Content-Length": str(GiB)}
    with contextlib.suppress(httpx.HTTPError):  # the server goes away: what this test is about
        httpx.post(f"{url}/even-sum", content=body(), headers=headers, timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_api_killed_mid_upload_leaves_no_job_and_its_file_is_swept(settings, redis, dispatcher):
    port = free_port()
    uploads = Path(settings.uploads_url.removeprefix("file://"))
    env = {"DASK_SCHEDULER_ADDRESS": settings.dask_scheduler_address, "SPACETIME_UPLOAD_STALE_S": "1"}
    with api_process(settings.redis_url, settings.data_dir, port=port, **env) as (api, url):
        sender = threading.Thread(target=endless_upload, args=(url,), daemon=True)
        sender.start()
        part = wait_until(lambda: next((p for p in uploads.glob("*.part") if p.stat().st_size > 20 * 2**20), None))
        api.send_signal(signal.SIGKILL)
        api.wait()
        sender.join(30)

    assert part.exists()  # what the crash left behind...
    assert not [name for name in redis.keys("*") if name.startswith(b"result:")]  # ...and no job
    assert not [p for p in uploads.iterdir() if not p.name.endswith(".part")]  # no file that looks whole

    # ... as a crash streaming a large image in would leave one (images kept as files).
    image_part = uploads / "images" / "cut.png.part"
    image_part.parent.mkdir()
    image_part.write_bytes(b"\x89PNG")
    time.sleep(1.5)  # older than SPACETIME_UPLOAD_STALE_S
    with api_process(settings.redis_url, settings.data_dir, port=port, **env) as (_, url):
        assert not part.exists() and not image_part.exists()  # swept at start
        response = httpx.post(f"{url}/even-sum", content=b"2 4 5", headers={"Content-Type": "text/plain"})
        assert response.status_code == 201
        token = response.json()["token"]
        assert wait_status(url, "even-sum", token)[-1] == {"status": "finished"}
        assert httpx.get(f"{url}/even-sum/{token}/result").json()["sum"] == 6
