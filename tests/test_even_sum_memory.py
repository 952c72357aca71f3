"""A worker's memory follows the block size, not the file size."""

import sys
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from compute.defaults import MiB
from compute.even_sum import combine, plan_blocks, submit_even_sum, sum_block
from tests.moto_s3 import moto_server, new_bucket, s3_client
from tests.number_files import reference

BLOCK_BYTES = 1 * MiB
LINE = b"1234567 -24 +316 -1000000000000000 \n"

pytestmark = [
    pytest.mark.slow,  # a worker process of its own and a 64 MiB file
    pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc"),
]


def reset_peak_rss() -> int:
    """In the worker: start a new peak-RSS measurement (Linux: clear_refs 5); the RSS now."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    return _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


@pytest.fixture(scope="module")
def worker_process():
    """One worker in its own process, one thread: its RSS is the job's alone."""
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", preload=["compute.preload"]
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def expected(size: int) -> dict:
    """The result for LINE repeated up to ``size`` bytes, without parsing it in Python."""
    lines = size // len(LINE)
    return {
        **reference(LINE),
        "sum": -24 * lines + 316 * lines - 10**15 * lines,
        "even_count": 3 * lines,
        "count": 4 * lines,
        "bytes": size,
    }


def test_a_file_64_times_the_block_size_stays_within_a_few_blocks(worker_process, tmp_path):
    client = worker_process
    path = tmp_path / "numbers.txt"
    path.write_bytes(LINE * (64 * MiB // len(LINE)))
    size = path.stat().st_size
    warm = tmp_path / "warm.txt"
    warm.write_bytes(LINE * 100_000)  # one pass first: buffers, imports, task machinery
    submit_even_sum(client, str(warm), block_bytes=BLOCK_BYTES, key_prefix="warm")[1].result()

    (before,) = client.run(reset_peak_rss).values()
    _, total = submit_even_sum(client, str(path), block_bytes=BLOCK_BYTES, key_prefix="big")
    result = total.result()
    (peak,) = client.run(peak_rss).values()

    assert result == expected(size)
    grown = peak - before
    print(
        f"worker RSS {before / MiB:.0f} MiB, peak +{grown / MiB:.1f} MiB for a {size / MiB:.0f} MiB file",
        file=sys.stderr,
    )
    assert grown < 8 * BLOCK_BYTES
    assert grown < size / 8


def test_a_block_from_s3_holds_about_two_blocks(worker_process, monkeypatch):
    """Concurrent ranged GETs: the block's buffer, plus the parts in flight (about one
    more block at the defaults, 8 parts of an eighth of a block), whatever the file's size."""
    client = worker_process
    data = LINE * (16 * MiB // len(LINE))
    block_bytes, part_bytes = 4 * MiB, 512 * 2**10
    # moto reads a whole object for each ranged GET: from memory, not from a temporary file.
    monkeypatch.setenv("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(len(data)))
    with moto_server() as endpoint:
        bucket = new_bucket(endpoint)
        s3_client(endpoint).put_object(Bucket=bucket, Key="numbers.txt", Body=data)
        options = {"client_kwargs": {"endpoint_url": endpoint}, "key": "testing", "secret": "testing"}
        url = f"s3://{bucket}/numbers.txt"

        def job(blocks):
            futures = [
                client.submit(sum_block, url, start, end, options, part_bytes=part_bytes, key=f"s3-block-{start}")
                for start, end in blocks
            ]
            return combine(client.gather(futures))

        job(plan_blocks(2**16, 2**16))  # a small block first: imports, connections
        (before,) = client.run(reset_peak_rss).values()
        result = job(plan_blocks(len(data), block_bytes))
        (peak,) = client.run(peak_rss).values()

    assert result == expected(len(data))
    grown = peak - before
    print(
        f"worker RSS {before / MiB:.0f} MiB, peak +{grown / MiB:.1f} MiB, {block_bytes // MiB} MiB blocks",
        file=sys.stderr,
    )
    assert grown < 2.5 * block_bytes
