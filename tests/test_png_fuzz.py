"""Hostile PNGs through the API onto a real worker process: a 4xx or a job that ends, never a crash.

The worker runs in its own process under a memory limit (conftest's process_client), so a
decoder that blew up (a segfault, or memory past the limit and the nanny's restart) shows
as a changed worker pid, not as a dead test process.
"""

import functools
import os
import resource
import struct
import tracemalloc
import zlib

import httpx
import numpy as np
import pytest
from distributed import Client
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import Redis

from backend.core.kinds import RANDOMIZE
from backend.core.settings import Settings
from backend.jobs.store import JobStore, Submission
from compute.defaults import PILLOW_MAX_PIXELS, MiB
from compute.errors import InvalidImage
from compute.image import randomize_image
from compute.png import PNG_SIGNATURE, output_bound
from tests.images import make_image, png_bytes, png_chunk
from tests.servers import live_system
from tests.waiting import wait_status

# What the worker may say about a bad image; anything else (a traceback, a numpy error) is a bug.
READABLE_ERRORS = ("not a PNG", "corrupt PNG", "image too large")
MODES = ("RGB", "L", "RGBA", "LA", "P", "I;16", "1")
BASES = [png_bytes(make_image(mode, np.random.default_rng(7))) for mode in MODES]

# A live system on a worker process, hundreds of hostile images.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_api(redis_url, process_client, tmp_path_factory):
    """The API and a dispatcher in front of ONE worker process with a 1 GiB memory limit."""
    Redis.from_url(redis_url).flushall()
    config = Settings(
        redis_url=redis_url,
        dask_scheduler_address=process_client.scheduler.address,
        data_dir=tmp_path_factory.mktemp("png-fuzz"),
        default_rate=0,  # hundreds of images from one client: the rate limit is tested elsewhere
    )
    with live_system(config, process_client) as url:
        yield url, process_client


# -- building hostile PNGs ---------------------------------------------------------------------


def chunk_spans(png: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, data length, type) of each chunk, in order."""
    spans, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        spans.append((pos, length, png[pos + 4 : pos + 8]))
        pos += 12 + length
    return spans


@functools.cache
def deflated_zeros(size: int = 256 * MiB) -> bytes:
    """A zlib stream of ``size`` zero bytes: ~250 KiB that inflates a thousandfold."""
    compressor = zlib.compressobj(9)
    block = bytes(MiB)
    return b"".join(compressor.compress(block) for _ in range(size // MiB)) + compressor.flush()


def bomb_chunk(kind: bytes) -> bytes:
    """A zTXt, iTXt or iCCP chunk whose compressed text or profile is a decompression bomb."""
    header = {b"zTXt": b"comment\0\0", b"iTXt": b"comment\0\1\0\0\0", b"iCCP": b"profile\0\0"}[kind]
    return png_chunk(kind, header + deflated_zeros())


@st.composite
def hostile_pngs(draw) -> bytes:
    png = bytearray(draw(st.sampled_from(BASES)))
    spans = chunk_spans(png)
    mutation = draw(st.sampled_from(["truncate", "flip bits", "bad CRC", "huge IHDR", "text bomb", "IDAT bomb"]))
    if mutation == "truncate":
        return bytes(png[: draw(st.integers(0, len(png) - 1))])
    if mutation == "flip bits":
        flips = st.tuples(st.integers(0, len(png) - 1), st.integers(0, 7))
        for position, bit in draw(st.lists(flips, min_size=1, max_size=16)):
            png[position] ^= 1 << bit
        return bytes(png)
    if mutation == "bad CRC":
        offset, length, _ = draw(st.sampled_from(spans))
        png[offset + 8 + length] ^= 0xFF
        return bytes(png)
    if mutation == "huge IHDR":
        side = st.one_of(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 10_000]), st.integers(0, 2**32 - 1))
        ihdr = struct.pack(">II", draw(side), draw(side)) + png[24:29]
        return bytes(png[:8] + png_chunk(b"IHDR", ihdr) + png[33:])
    if mutation == "text bomb":
        bomb = bomb_chunk(draw(st.sampled_from([b"zTXt", b"iTXt", b"iCCP"])))
        at = draw(st.sampled_from([33, spans[-1][0]]))  # right after IHDR, or just before IEND
        return bytes(png[:at] + bomb + png[at:])
    # IDAT bomb: the pixel data replaced by a stream that inflates far past the image's size
    first_idat = next(offset for offset, _, kind in spans if kind == b"IDAT")
    return bytes(png[:first_idat] + png_chunk(b"IDAT", deflated_zeros()) + spans_after_idat(png, spans))


def spans_after_idat(png: bytearray, spans) -> bytes:
    """The chunks that follow the image data (IEND at least)."""
    last = max(i for i, (_, _, kind) in enumerate(spans) if kind == b"IDAT")
    return bytes(png[spans[last + 1][0] :]) if last + 1 < len(spans) else b""


def worker_pids(client: Client) -> dict:
    return client.run(os.getpid)


def worker_peak_rss(client: Client) -> int:
    """The worker process's peak resident memory so far, in bytes (Linux reports KiB)."""
    (peak,) = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values()
    return peak * 1024


def submit_and_check(api_url: str, png: bytes) -> dict:
    """Submit ``png``; assert the answer is a 400 or a job that ends readably; return the final status."""
    response = httpx.post(f"{api_url}/randomize", content=png, headers={"Content-Type": "image/png"}, timeout=30)
    assert response.status_code in (201, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"].startswith(("the body is not a PNG", "corrupt PNG", "image too large")), (
            response.text
        )
        return {"status": "refused"}
    token = response.json()["token"]
    final = wait_status(api_url, "randomize", token)[-1]
    if final["status"] == "errored":
        assert final["error"].startswith(READABLE_ERRORS), final["error"]
    else:
        assert httpx.get(f"{api_url}/randomize/{token}/result").content.startswith(PNG_SIGNATURE)
    assert httpx.get(f"{api_url}/tasks/{token}").json()["attempts"] == 1, "the job ran twice"
    return final


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_mutated_pngs_get_a_4xx_or_a_readable_end_and_no_worker_dies(image_api):
    api_url, client = image_api
    before = worker_pids(client)
    outcomes: list[str] = []

    @given(png=hostile_pngs())
    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    def submit(png):
        outcomes.append(submit_and_check(api_url, png)["status"])

    submit()
    assert worker_pids(client) == before, "a worker process was restarted"
    assert {"refused", "errored"} <= set(outcomes), f"the mutations did not reach both ends: {outcomes}"


def bomb_in_pillows_warning_range(width: int = 10_000, height: int = 10_000) -> bytes:
    """A grey PNG of 100 M pixels (Pillow warns from 89 M, refuses from 179 M) in ~100 KiB."""
    assert PILLOW_MAX_PIXELS < width * height < 2 * PILLOW_MAX_PIXELS
    rows = zlib.compressobj(9)
    row = bytes(1 + width)  # filter byte + pixels
    data = b"".join(rows.compress(row) for _ in range(height)) + rows.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


@pytest.mark.timeout(120)
def test_decompression_bomb_in_pillows_warning_range_errors_with_bounded_memory(image_api, redis_url):
    api_url, client = image_api
    bomb = bomb_in_pillows_warning_range()
    # Here in the test process warnings are errors: a DecompressionBombWarning would fail this.
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImage, match="image too large: 10000x10000"):
            randomize_image(bomb, max_pixels=PILLOW_MAX_PIXELS)  # the highest limit the settings allow
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, f"refusing the bomb took {peak / MiB:.0f} MiB"

    # The door refuses it from its IHDR (400); queued by hand (the Redis contract lets any
    # producer queue a job), the worker's own check refuses it with the same words.
    assert submit_and_check(api_url, bomb) == {"status": "refused"}
    before, peak_before = worker_pids(client), worker_peak_rss(client)
    queued = Submission(RANDOMIZE, input_bytes=bomb, bytes=len(bomb), output_room=output_bound(bomb))
    token = JobStore(Redis.from_url(redis_url), 60).submit(queued).token
    final = wait_status(api_url, "randomize", token)[-1]
    assert final["status"] == "errored" and final["error"].startswith("image too large: 10000x10000")
    growth = worker_peak_rss(client) - peak_before
    assert growth < 64 * MiB, f"the worker's peak memory grew by {growth / MiB:.0f} MiB"  # decoded: >= 95 MiB
    assert worker_pids(client) == before
