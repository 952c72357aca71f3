"""Even sum over an S3 shaped like S3, one run: moto behind bench/shaped_s3.py's proxy (each
response's first byte 30 ms after its request, at most 20 MB/s per connection).

    .venv/bin/python bench/even_sum_s3.py --size 256MiB [--workers 1] [--threads 1] [--repeat 3]
        [--block-bytes 64MiB]

One worker by default: its 8 streams of 20 MB/s keep moto, the proxy and the client well
inside this 2-core machine, so that the shape is the limit. With ``--workers 2`` there
are 16 streams, which the splicing proxy still serves with CPU to spare (the run shows
it: moto's unshaped rate stays well above the shaped one). ``--threads 2`` gives each
worker two block tasks at once of 4 GETs each (the same 8 streams a worker): one
task's parse then overlaps the other's reads, as on a worker of several threads.

Rows, each the best of ``--repeat`` runs after a warm-up run, all run in turns (one run of
each, then again), so that a busy neighbour slows them alike and the ratios hold:
- one block (the first) read with one GET; the same block as concurrent ranged GETs
  (compute/defaults.py: S3_CONCURRENCY parts of S3_PART_BYTES at a time); and
  ``sum_block`` on it, which parses the parts as they arrive;
- raw ranged reads of the whole file, as many plain processes as the job has workers,
  each reading a block at a time as the job's tasks do, no parsing: what the job can at
  best reach; the same straight from moto, not shaped: what moto, the client and this
  machine can serve, which must be well above the shaped rate for the shape to be the limit;
- our Dask job (``--workers`` worker processes of ``--threads`` threads), and the same
  with one GET per block (what the job did before ranged reads).
Then the ratios: one GET over ranged GETs for a block; the job over raw ranged reads;
each worker's peak RSS over its RSS before any job (the kernel and s3fs loaded), in
blocks. And the CPU check, before and after the runs.
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
from even_sum import S3_CREDENTIALS, cpu_check, in_turns, our_job, peak_rss, plain_processes, warm_page_cache

from compute import ranged
from compute.defaults import S3_CONCURRENCY, S3_PART_BYTES, MiB
from compute.even_sum import DEFAULT_BLOCK_BYTES, plan_blocks, sum_block


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


def block_jobs(url: str, shaped: str, block_bytes: int) -> dict:
    """One block, in this process: one GET, ranged GETs, and sum_block (ranged + parsing)."""
    one_get = (block_bytes, 1)
    in_parts = (S3_PART_BYTES, S3_CONCURRENCY)
    return {
        "one block, one GET": lambda: read_block(url, 0, block_bytes, options(shaped), *one_get),
        "one block, ranged GETs": lambda: read_block(url, 0, block_bytes, options(shaped), *in_parts),
        "one block, sum_block": lambda: {**sum_block(url, 0, block_bytes, options(shaped)), "sum": None},
    }


def raw_reads(pool, url: str, size: int, endpoint: str, block_bytes: int):
    """The whole file as ranged GETs in the pool's processes, a block per task."""
    blocks = [
        (url, start, end, options(endpoint), S3_PART_BYTES, S3_CONCURRENCY)
        for start, end in plan_blocks(size, block_bytes)
    ]

    def job() -> dict:
        reads = pool.starmap(read_block, blocks, chunksize=1)
        return {"sum": None, "bytes": sum(read["bytes"] for read in reads)}

    return job


def current_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def print_table(rows: dict, size: int, answer: int) -> None:
    print(f"{'':40} {'seconds':>8} {'MB/s':>7}  exact")
    for name, row in rows.items():
        nbytes = row.get("bytes") or size
        exact = "-" if row["sum"] is None else ("yes" if row["sum"] == answer else f"NO ({row['sum']})")
        print(f"{name:40} {row['seconds']:8.3f} {nbytes / row['seconds'] / 1e6:7.1f}  {exact}")


def print_ratios(rows: dict, workers: int, blocks_held: list[float]) -> None:
    def seconds(name: str) -> float:
        return rows[name]["seconds"]

    raw, ours = seconds(f"raw ranged reads, {workers} processes"), seconds(f"ours, Dask, {workers} workers")
    in_parts, parsed = seconds("one block, ranged GETs"), seconds("one block, sum_block")
    print(f"one block: one GET takes {seconds('one block, one GET') / in_parts:.1f}x as long as ranged GETs")
    print(f"one block: sum_block (parsing as parts arrive) takes {parsed / in_parts:.2f}x the read alone")
    print(f"the job reaches {raw / ours:.2f}x the throughput of raw ranged reads")
    print(f"the job with one GET per block took {seconds('ours, one GET per block (before)') / ours:.1f}x as long")
    print(f"moto not shaped serves {raw / seconds('the same, moto not shaped'):.1f}x the shaped rate")
    held = ", ".join(f"{blocks:.2f}" for blocks in blocks_held)
    print(f"each worker's peak RSS over its RSS before any job (s3fs loaded): {held} blocks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("256MiB"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help=f"threads a worker; each block task then reads {S3_CONCURRENCY} / threads GETs at once, so that a "
        f"worker keeps {S3_CONCURRENCY} GETs in flight, as each process of the raw reads does",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--block-bytes", type=parse_size, default=DEFAULT_BLOCK_BYTES)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from tests.moto_s3 import new_bucket
    from tests.servers import free_port

    path, answer = ensure_file(args.size, "lines")
    warm_page_cache(path)
    size, block = answer["bytes"], args.block_bytes
    print(
        f"{path.name}: {size / 1e9:.3f} GB; block {block / MiB:g} MiB, read as {S3_CONCURRENCY} GETs at once "
        f"of {S3_PART_BYTES / MiB:g} MiB a worker ({args.threads} thread(s)); "
        f"shaped: first byte {shaped_s3.FIRST_BYTE_S * 1000:g} ms, "
        f"{shaped_s3.BYTES_PER_S / 1e6:g} MB/s a connection; best of {args.repeat}; {os.cpu_count()} CPUs"
    )
    moto_port = free_port()
    with (
        shaped_s3.start("moto", "--port", str(moto_port)) as moto,
        shaped_s3.start("proxy", "--port", str(free_port()), "--upstream-port", str(moto_port)) as shaped,
        plain_processes(args.workers) as pool,
        LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads, preload=["compute.preload"], dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        print(cpu_check(pool))
        bucket = new_bucket(moto, **S3_CREDENTIALS)
        fsspec.filesystem("s3", **options(moto)).put_file(str(path), f"{bucket}/{path.name}")
        url = f"s3://{bucket}/{path.name}"
        client.run(sum_block, url, 0, 100, options(shaped))  # s3fs, botocore's S3 model, a session
        resting = client.run(current_rss)
        ours = our_job(client, url, block, options(shaped), concurrency=max(S3_CONCURRENCY // args.threads, 1))
        one_get = our_job(client, url, block, options(shaped), part_bytes=block, concurrency=1)
        jobs = {
            **block_jobs(url, shaped, block),
            f"raw ranged reads, {args.workers} processes": raw_reads(pool, url, size, shaped, block),
            "the same, moto not shaped": raw_reads(pool, url, size, moto, block),
            f"ours, Dask, {args.workers} workers": lambda: {"sum": ours()},
            "ours, one GET per block (before)": lambda: {"sum": one_get()},
        }
        start = time.perf_counter()
        rows = in_turns(jobs, args.repeat)
        peaks = client.run(peak_rss)
        after = f"{cpu_check(pool)} (again, after the runs)"
    for name in ("one block, one GET", "one block, ranged GETs", "one block, sum_block"):
        rows[name]["bytes"] = block
    print_table(rows, size, answer["sum"])
    print_ratios(rows, args.workers, [(peaks[worker] - resting[worker]) / block for worker in resting])
    print(f"{after}; the runs took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))  # tests.servers, tests.moto_s3
    main()
