"""Even sum over an S3 shaped like S3, one run: moto behind bench/shaped_s3.py's proxy (each
response's first byte 30 ms after its request, at most 20 MB/s per connection).

    .venv/bin/python bench/even_sum_s3.py --size 256MiB [--workers 2] [--repeat 3] [--block-bytes 64MiB]

Rows, best of ``--repeat`` after a warm-up run:
- one block (the first) read with one GET; the same block as concurrent ranged GETs
  (compute/ranged.py's defaults: CONCURRENCY parts of PART_BYTES at a time); and
  ``sum_block`` on it, which parses the parts as they arrive;
- raw ranged reads of the whole file, as many plain processes as the job has workers,
  each reading a block at a time as the job's tasks do, no parsing: what the job can at
  best reach; the same straight from moto, not shaped: what moto, the client and this
  machine can serve, which must be well above the shaped rate for the shape to be the limit;
- our Dask job (``--workers`` worker processes of one thread), and the same with one GET
  per block (what the job did before ranged reads).
Then the ratios: one GET over ranged GETs for a block; the job over raw ranged reads;
each worker's peak RSS over its RSS before any job, in blocks. And the CPU check.
"""

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import fsspec
import shaped_s3
from datagen import ensure_file, parse_size
from even_sum import (
    S3_CREDENTIALS,
    best_of,
    cpu_check,
    on_cluster,
    our_job,
    peak_rss,
    plain_processes,
    warm_page_cache,
)

from compute import ranged
from compute.even_sum import DEFAULT_BLOCK_BYTES, combine, plan_blocks, sum_block

MiB = 2**20


def options(endpoint: str) -> dict:
    return {**S3_CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint}}


_scratch = bytearray()  # read_block's buffer, one per process, kept: as a block task's


def read_block(url: str, start: int, end: int, storage_options: dict, part_bytes: int, concurrency: int) -> dict:
    """[start, end) of ``url`` as ranged GETs into a buffer: the read alone."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    ranges = [(start + a, start + b) for a, b in plan_blocks(end - start, part_bytes)]
    if len(_scratch) < end - start:
        _scratch.extend(bytes(end - start - len(_scratch)))
    with contextlib.closing(ranged.fill(fs, path, ranges, memoryview(_scratch), concurrency)) as parts:
        return {"sum": None, "bytes": max(parts)}


def block_rows(url: str, shaped: str, block_bytes: int, repeat: int) -> dict:
    """One block, in this process: one GET, ranged GETs, and sum_block (ranged + parsing)."""
    one_get = (block_bytes, 1)
    in_parts = (ranged.PART_BYTES, ranged.CONCURRENCY)
    jobs = {
        "one block, one GET": lambda: read_block(url, 0, block_bytes, options(shaped), *one_get),
        "one block, ranged GETs": lambda: read_block(url, 0, block_bytes, options(shaped), *in_parts),
        "one block, sum_block": lambda: sum_block(url, 0, block_bytes, options(shaped)),
    }
    return {name: best_of(job, repeat) for name, job in jobs.items()}


def raw_reads(pool, url: str, size: int, endpoint: str, block_bytes: int):
    """The whole file as ranged GETs in the pool's processes, a block per task."""
    blocks = [
        (url, start, end, options(endpoint), ranged.PART_BYTES, ranged.CONCURRENCY)
        for start, end in plan_blocks(size, block_bytes)
    ]

    def job() -> dict:
        reads = pool.starmap(read_block, blocks, chunksize=1)
        return {"sum": None, "bytes": sum(read["bytes"] for read in reads)}

    return job


def one_get_per_block_job(client, url: str, size: int, block_bytes: int, storage_options: dict):
    """Our job as it was: each block task reads its range with one GET. (Its own graph
    until submit_even_sum passes part_bytes and concurrency on to sum_block.)"""

    def job() -> int:
        futures = [
            client.submit(
                sum_block, url, start, end, storage_options, part_bytes=block_bytes, concurrency=1, pure=False
            )
            for start, end in plan_blocks(size, block_bytes)
        ]
        return client.submit(combine, futures).result()["sum"]

    return job


def current_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def cluster_rows(url: str, size: int, shaped: str, args) -> tuple[dict, list[float]]:
    """Our job and the one-GET job on a fresh cluster; each worker's peak RSS over its RSS
    before any job, in blocks."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            preload=["compute.preload"],
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        resting = client.run(current_rss)
        ours = on_cluster(client, our_job(client, url, args.block_bytes, options(shaped)), args.repeat)
        peaks = client.run(peak_rss)
        before = one_get_per_block_job(client, url, size, args.block_bytes, options(shaped))
        rows = {
            f"ours, Dask, {args.workers} workers": ours,
            "ours, one GET per block (before)": on_cluster(client, before, args.repeat),
        }
    blocks_held = [(peaks[worker] - resting[worker]) / args.block_bytes for worker in resting]
    return rows, blocks_held


def print_table(rows: dict, size: int, answer: int) -> None:
    print(f"{'':40} {'seconds':>8} {'MB/s':>7}  exact")
    for name, row in rows.items():
        nbytes = row.get("bytes") or size
        exact = "-" if row["sum"] is None else ("yes" if row["sum"] == answer else f"NO ({row['sum']})")
        print(f"{name:40} {row['seconds']:8.3f} {nbytes / row['seconds'] / 1e6:7.1f}  {exact}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("256MiB"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--block-bytes", type=parse_size, default=DEFAULT_BLOCK_BYTES)
    args = parser.parse_args()

    from tests.helpers import free_port
    from tests.s3fixtures import new_bucket

    path, answer = ensure_file(args.size, "lines")
    warm_page_cache(path)
    size, block = answer["bytes"], args.block_bytes
    print(
        f"{path.name}: {size / 1e9:.3f} GB; block {block / MiB:g} MiB, read as {ranged.CONCURRENCY} GETs at once "
        f"of {ranged.PART_BYTES / MiB:g} MiB; shaped: first byte {shaped_s3.FIRST_BYTE_S * 1000:g} ms, "
        f"{shaped_s3.BYTES_PER_S / 1e6:g} MB/s a connection; best of {args.repeat}; {os.cpu_count()} CPUs"
    )
    moto_port = free_port()
    with (
        shaped_s3.start("moto", "--port", str(moto_port)) as moto,
        shaped_s3.start("proxy", "--port", str(free_port()), "--upstream-port", str(moto_port)) as shaped,
        plain_processes(args.workers) as pool,
    ):
        print(cpu_check(pool))
        bucket = new_bucket(moto, **S3_CREDENTIALS)
        fsspec.filesystem("s3", **options(moto)).put_file(str(path), f"{bucket}/{path.name}")
        url = f"s3://{bucket}/{path.name}"
        start = time.perf_counter()
        rows = block_rows(url, shaped, block, args.repeat)
        for name, endpoint in (
            (f"raw ranged reads, {args.workers} processes", shaped),
            ("the same, moto not shaped", moto),
        ):
            rows[name] = best_of(raw_reads(pool, url, size, endpoint, block), args.repeat)
        job_rows, blocks_held = cluster_rows(url, size, shaped, args)
        rows.update(job_rows)
    for name in ("one block, one GET", "one block, ranged GETs", "one block, sum_block"):
        rows[name].update(bytes=block, sum=None)  # a block's sum is not the file's
    print_table(rows, size, answer["sum"])
    one_get, in_parts = rows["one block, one GET"]["seconds"], rows["one block, ranged GETs"]["seconds"]
    raw = rows[f"raw ranged reads, {args.workers} processes"]["seconds"]
    ours = rows[f"ours, Dask, {args.workers} workers"]["seconds"]
    print(f"one block: one GET takes {one_get / in_parts:.1f}x as long as ranged GETs")
    parsed = rows["one block, sum_block"]["seconds"]
    print(f"one block: sum_block (parsing as parts arrive) takes {parsed / in_parts:.2f}x the read alone")
    print(f"the job reaches {raw / ours:.2f}x the throughput of raw ranged reads")
    print(f"moto not shaped serves {raw / rows['the same, moto not shaped']['seconds']:.1f}x the shaped rate")
    print(f"each worker's peak RSS over its RSS before any job: {', '.join(f'{b:.2f}' for b in blocks_held)} blocks")
    print(f"(whole run: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))  # tests.helpers, tests.s3fixtures
    main()
