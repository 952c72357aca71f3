"""Even sum on one file, one run: our kernel and Dask job against DuckDB, Polars and
dask.dataframe.

    .venv/bin/python bench/even_sum.py --size 100MB|1GiB|5GiB --shape lines|wide
        [--repeat 3] [--block-bytes 64MiB] [--sweep 8MiB,32MiB] [--api URL|up] [--s3] [--ceiling-only]
        [--kernels-only] [--jobs-only]

The file comes from bench/datagen.py (made once, with its exact answer) and is read once
first, so every contender reads it from the page cache. Prints one table: best seconds
of ``--repeat`` runs, GB/s, time over ours (the Dask job), peak RSS of the busiest
process, and whether the answer is exact. First, on one core and in turns, the kernel
on each path this CPU runs (compute/kernel.py) against the numba kernel and against
``pread`` of the same 64 MiB chunks: the kernel alone, the reads alone, and both, one
after the other, through a fresh ``mmap``, and as a block task does them: a local file
mapped, and another store's file read in parts beside the kernel, or in one part
(``--kernels-only``: just that). Then the rows:
- kernel, 1 core: ``sum_bytes`` over the file in 64 MiB chunks (the reads not timed);
  and the same with the reads timed, which is what one block task does;
- numba byte loop, 1 core: the plain @njit loop the kernel replaces (no validation);
- same blocks, 1 plain process / N plain processes (N = cores): ``sum_block`` over the
  job's blocks in a pool of processes started beforehand, no Dask: the honest parallel
  ceiling, which the run prints our Dask job's ratio to. These two rows and ours run in
  turns, round after round, so that a neighbour weighs on them alike;
  ``--ceiling-only`` runs just them (and ``--api``), no other contender;
- ours, Dask: ``submit_even_sum`` on a warm LocalCluster of 2 worker processes, 1 thread
  each, the kernel preloaded;
- DuckDB and Polars: their CSV readers, all cores (2 here), in turns with the ceiling
  and ours, a child process each round (its own timing: not the child's start);
- dask.dataframe.read_csv on the same cluster.
Contenders that run in this process's place run in a child process each, so that peak
RSS is theirs alone. Every run prints a CPU check before and after the rows: a
pure-Python loop alone, then two at once, i.e. the speed-up the cores give today
(neighbours on a shared VM change it). ``--api`` also submits the job to a running
SpaceTime API (file:// URL), or with ``up`` to a `spacetime up` the run starts on free
ports, in turns with the rest, and prints its ratio to the ceiling, DuckDB and Polars;
``--jobs-only`` runs just the rows in turns. ``--s3`` puts the file in a moto server on
loopback and runs the job over s3fs, next to what raw ranged s3fs reads of that server
reach (moto unshaped: bench/even_sum_s3.py shapes it like S3).
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np
import shaped_s3
from datagen import WIDE_PER_LINE, ensure_file, parse_size

from compute import kernel, local_read
from compute.defaults import MiB
from compute.even_sum import (
    DEFAULT_BLOCK_BYTES,
    combine,
    plan_blocks,
    submit_even_sum,
    sum_block,
    sum_bytes,
    warm_up,
)

CHUNK_BYTES = 64 * MiB
# A block task's read paths (compute/local_read.py): a local file's, mapped, and another
# store's, read into the buffer in parts beside the kernel (before that, in one part).
MAPPED = "block task, local file mapped"
READ = "block task, parts read beside kernel"
READ_WHOLE = "block task, read then kernel"
S3_CREDENTIALS = {"key": "bench", "secret": "bench"}


# --- contenders that run in a child process -------------------------------------------


def whole_token_chunks(path: Path):
    """The file in ~64 MiB pieces cut after whitespace, from one reusable buffer."""
    buffer = np.empty(CHUNK_BYTES, dtype=np.uint8)
    carry = 0
    with open(path, "rb", buffering=0) as file:
        while got := file.readinto(memoryview(buffer)[carry:]):
            end = carry + got
            cut = end if end < buffer.size else last_space(buffer[:end]) + 1
            yield buffer[:cut]
            carry = end - cut
            buffer[:carry] = buffer[cut:end]
        if carry:
            yield buffer[:carry]


def last_space(buffer: np.ndarray) -> int:
    tail = bytes(buffer[-4096:])
    return buffer.size - len(tail) + max(tail.rfind(space) for space in b" \t\n\r\x0b\x0c")


def kernel_only(path: Path, shape: str) -> tuple[float, int]:
    warm_up()
    seconds, total = 0.0, 0
    for chunk in whole_token_chunks(path):
        start = time.perf_counter()
        total += sum_bytes(chunk)["sum"]
        seconds += time.perf_counter() - start
    return seconds, total


def kernel_with_reads(path: Path, shape: str) -> tuple[float, int]:
    warm_up()
    start = time.perf_counter()
    total = sum(sum_bytes(chunk)["sum"] for chunk in whole_token_chunks(path))
    return time.perf_counter() - start, total


@numba.njit(cache=True)
def _byte_loop(buf):
    total = value = 0
    negative = inside = False
    for byte in buf:
        if 48 <= byte <= 57:
            value = value * 10 + (byte - 48)
            inside = True
        elif byte == 45:
            negative = True
        else:
            if inside and value % 2 == 0:
                total += -value if negative else value
            value, negative, inside = 0, False, False
    if inside and value % 2 == 0:
        total += -value if negative else value
    return total


def numba_loop(path: Path, shape: str) -> tuple[float, int]:
    _byte_loop(np.frombuffer(b"1 2", dtype=np.uint8))
    seconds, total = 0.0, 0
    for chunk in whole_token_chunks(path):
        start = time.perf_counter()
        total += int(_byte_loop(chunk))
        seconds += time.perf_counter() - start
    return seconds, total


def columns(shape: str) -> list[str]:
    return ["x"] if shape == "lines" else [f"c{i}" for i in range(WIDE_PER_LINE)]


def duckdb_sum(path: Path, shape: str) -> tuple[float, int]:
    import duckdb

    types = ", ".join(f"'{name}': 'BIGINT'" for name in columns(shape))
    source = f"read_csv('{path}', header = false, delim = ' ', columns = {{{types}}})"
    query = (
        f"SELECT sum(x) FROM {source} WHERE x % 2 = 0"
        if shape == "lines"
        else f"SELECT sum(v) FROM (UNPIVOT {source} ON COLUMNS(*) INTO NAME c VALUE v) WHERE v % 2 = 0"
    )
    start = time.perf_counter()
    ((total,),) = duckdb.sql(query).fetchall()
    return time.perf_counter() - start, int(total)


def polars_sum(path: Path, shape: str) -> tuple[float, int]:
    import polars as pl

    frame = pl.scan_csv(path, has_header=False, separator=" ", schema={name: pl.Int64 for name in columns(shape)})
    values = frame.select(pl.col("x").alias("value")) if shape == "lines" else frame.unpivot()
    query = values.filter(pl.col("value") % 2 == 0).select(pl.col("value").cast(pl.Int128).sum())
    start = time.perf_counter()
    total = query.collect().item()
    return time.perf_counter() - start, int(total)


CHILDREN = {
    "kernel, 1 core (reads not timed)": kernel_only,
    "kernel + reads, 1 core": kernel_with_reads,
    "numba byte loop, 1 core": numba_loop,
    "DuckDB read_csv": duckdb_sum,
    "Polars scan_csv": polars_sum,
}
SINGLE_CORE = list(CHILDREN)[:3]  # run one after another, before the rest
OTHERS = list(CHILDREN)[3:]  # in turns with our jobs and the ceiling, a run each round
API = "ours, through the SpaceTime API"


def child_main(name: str, path: Path, shape: str, repeat: int) -> None:
    """In the child: run one contender ``repeat`` times, print its best and peak RSS."""
    runs = [CHILDREN[name](path, shape) for _ in range(repeat)]
    seconds = min(seconds for seconds, _ in runs)
    print(json.dumps({"seconds": seconds, "sum": runs[0][1], "peak_rss": peak_rss()}))


def in_child(name: str, path: Path, shape: str, repeat: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--path",
        str(path),
        "--shape",
        shape,
        "--repeat",
        str(repeat),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


# --- the kernel on each path, against the numba kernel and pread, one core -------------


def chunk_ranges(path: Path, chunk_bytes: int = CHUNK_BYTES) -> list[tuple[int, int]]:
    """[start, end) of ~``chunk_bytes`` pieces of the file, each cut after whitespace."""
    size, ranges, start = path.stat().st_size, [], 0
    with open(path, "rb", buffering=0) as file:
        while start < size:
            end = min(start + chunk_bytes, size)
            if end < size:
                file.seek(end - 4096)
                end = end - 4096 + last_space(np.frombuffer(file.read(4096), dtype=np.uint8)) + 1
            ranges.append((start, end))
            start = end
    return ranges


@contextmanager
def kernel_path(name: str):
    """The even-sum code on kernel path ``name`` (it looks ``kernel.scan`` up per call)."""
    chosen, kernel.scan = kernel.scan, kernel.scan_on(name)
    try:
        yield
    finally:
        kernel.scan = chosen


def kernel_jobs(path: Path) -> dict:
    """Jobs over the file's chunks from the page cache, each returning (wall seconds, CPU
    seconds of the process, all its threads, sum): pread alone; per path, the kernel alone
    (chunks read untimed) and pread + kernel one after the other; pread + kernel in 1 MiB
    steps, each parsed as it is read (while it is still in the CPU's cache); mmap + kernel
    (no copy, page faults instead); and ``sum_block`` on each chunk, a block task: its
    reads in one part, then the kernel (today's way before the reader thread), and in
    READ_PART_BYTES parts read on a second thread beside the kernel (compute/local_read.py).
    One reused buffer."""
    buffer = np.empty(CHUNK_BYTES + 4096, dtype=np.uint8)
    fd = os.open(path, os.O_RDONLY)

    def pread(start: int, end: int) -> np.ndarray:
        got = os.preadv(fd, [memoryview(buffer)[: end - start]], start)
        assert got == end - start
        return buffer[:got]

    chunks = chunk_ranges(path)

    def timed(read, name: str | None, ranges: list[tuple[int, int]] = chunks, untimed_read=pread):
        def job() -> tuple[float, float, int | None]:
            wall = cpu = 0.0
            total = 0
            with kernel_path(name or kernel.PATH):
                for start, end in ranges:
                    if not read:
                        chunk = untimed_read(start, end)
                    wall0, cpu0 = time.perf_counter(), time.process_time()
                    if read:
                        chunk = read(start, end)
                    if name:
                        total += chunk if isinstance(chunk, int) else sum_bytes(chunk)["sum"]
                    wall += time.perf_counter() - wall0
                    cpu += time.process_time() - cpu0
            return wall, cpu, total if name else None

        return job

    def mapped(start: int, end: int) -> int:
        """The chunk's sum through a fresh read-only mapping of its pages (the block task's)."""
        return sum_bytes(local_read.mapped(fd, start, end))["sum"]

    def block_task(url: str, options: dict | None = None, part_bytes: int = local_read.READ_PART_BYTES):
        """sum_block on each chunk of ``url``: the local file is mapped; another store's
        (the same file through fsspec's dir://) is read into the buffer in parts of
        ``part_bytes``."""

        def read(start: int, end: int) -> int:
            local_read.READ_PART_BYTES, chosen = part_bytes, local_read.READ_PART_BYTES
            try:
                return sum_block(url, start, end, options)["sum"]
            finally:
                local_read.READ_PART_BYTES = chosen

        return read

    auto = kernel.PATH
    jobs = {"pread only": timed(pread, name=None)}
    for name in reversed(kernel.available()):  # the numba kernel first
        jobs[f"kernel {name}"] = timed(None, name=name)
    for name in reversed(kernel.available()):
        jobs[f"pread + kernel {name}"] = timed(pread, name=name)
    jobs[f"same, 1 MiB steps, {auto}"] = timed(pread, name=auto, ranges=chunk_ranges(path, MiB))
    jobs[f"mmap + kernel {auto}"] = timed(mapped, name=auto)
    another_store = (f"dir://{path.name}", {"path": str(path.parent)})
    jobs[f"{READ_WHOLE}, {auto}"] = timed(block_task(*another_store, part_bytes=2 * CHUNK_BYTES), name=auto)
    jobs[f"{READ}, {auto}"] = timed(block_task(*another_store), name=auto)
    jobs[f"{MAPPED}, {auto}"] = timed(block_task(str(path)), name=auto)
    return jobs


def kernel_rows(path: Path, answer: int, repeat: int) -> None:
    """Print the kernel on each path against the numba kernel and pread, in turns: a round
    of every job, ``repeat`` times, after a warm-up round; best wall and CPU seconds each.
    Ratios are of CPU seconds (what a core gives; on a shared VM, wall time also holds
    waits for the CPU); the block task's two read paths are compared in both, as the
    reader thread buys wall time with a second core's CPU."""
    warm_up()
    jobs = kernel_jobs(path)
    best = {name: [float("inf"), float("inf"), job()[2]] for name, job in jobs.items()}
    for _ in range(repeat):
        for name, job in jobs.items():
            wall, cpu, _ = job()
            best[name][0], best[name][1] = min(best[name][0], wall), min(best[name][1], cpu)
    size = path.stat().st_size
    numba, pread = best[f"kernel {kernel.PORTABLE}"][1], best["pread only"][1]
    print(f"kernel per core, in turns, best of {repeat}; CPU: {cpu_model()}; auto path: {kernel.PATH}")
    width = max(map(len, best))
    print(f"{'':{width}} {'wall s':>7} {'GB/s':>6} {'CPU s':>7} {'GB/s':>6} {'x numba':>8} {'x pread':>8}  exact")
    for name, (wall, cpu, total) in best.items():
        exact = "-" if total is None else ("yes" if total == answer else f"NO ({total})")
        print(
            f"{name:{width}} {wall:7.3f} {size / wall / 1e9:6.2f} {cpu:7.3f} {size / cpu / 1e9:6.2f} "
            f"{numba / cpu:8.2f} {pread / cpu:8.2f}  {exact}"
        )
    read_wall, read_cpu, _ = best[f"{READ}, {kernel.PATH}"]
    mapped_wall, mapped_cpu, _ = best[f"{MAPPED}, {kernel.PATH}"]
    kernel_cpu = best[f"kernel {kernel.PATH}"][1]
    print(
        f"block task, a local file mapped: {read_cpu / mapped_cpu:.2f}x the read path's speed in CPU time, "
        f"{read_wall / mapped_wall:.2f}x in wall time; {kernel_cpu / mapped_cpu:.2f}x the kernel alone in CPU time "
        f"(read path {kernel_cpu / read_cpu:.2f}x)"
    )


def cpu_model() -> str:
    """The CPU's model name and its vector flags, from /proc/cpuinfo (Linux)."""
    info = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = [flag for flag in info.get("flags", "").split() if flag.startswith(("avx", "bmi"))]
    return f"{info.get('model name', '?')} ({' '.join(flags)})"


# --- peak RSS, Linux ------------------------------------------------------------------


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# --- contenders on the cluster ------------------------------------------------------


def on_cluster(client, job, repeat: int) -> dict:
    """Best seconds of ``job()`` (after one warm-up run) and the workers' peak RSS."""
    job()
    client.run(reset_peak_rss)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        total = job()
        runs.append((time.perf_counter() - start, total))
    peak = max(client.run(peak_rss).values())
    return {"seconds": min(seconds for seconds, _ in runs), "sum": runs[0][1], "peak_rss": peak}


def our_job(client, url: str, block_bytes: int, storage_options: dict | None = None, **reads):
    """Our job on ``client``'s cluster; ``reads``: S3 part_bytes and concurrency."""
    runs = iter(range(10**9))

    def job() -> int:
        prefix = f"bench-{next(runs)}"
        _, total = submit_even_sum(
            client, url, block_bytes=block_bytes, storage_options=storage_options, key_prefix=prefix, **reads
        )
        return total.result()["sum"]

    return job


def dask_dataframe_job(path: Path, shape: str):
    import dask.dataframe as dd

    def job() -> int:
        frame = dd.read_csv(str(path), sep=" ", header=None, names=columns(shape), dtype="int64", blocksize=CHUNK_BYTES)
        return int(frame.where(frame % 2 == 0, 0).sum().sum().compute())  # int64, as pandas sums

    return job


# --- the API and S3 ---------------------------------------------------------------------


def api_job(api: str, path: Path) -> dict:
    """POST /even-sum {"url"}, wait for its end (``?wait=``: answered as the job ends, no
    polling delay), fetch the result; client-side seconds."""
    import httpx

    with httpx.Client(base_url=api, timeout=60) as http:
        start = time.perf_counter()
        response = http.post("/even-sum", json={"url": path.as_uri()})
        response.raise_for_status()
        token = response.json()["token"]
        while (status := http.get(f"/even-sum/{token}/status", params={"wait": 20}).json())["status"] not in (
            "finished",
            "errored",
        ):
            pass
        if status["status"] == "errored":
            raise RuntimeError(f"the API job failed: {status}")
        total = http.get(f"/even-sum/{token}/result").json()["sum"]
        return {"seconds": time.perf_counter() - start, "sum": total, "peak_rss": None}


@contextmanager
def api_for(api: str | None, data_dir: Path):
    """The API to submit to: ``api`` itself, or for ``up`` a `spacetime up` of our own on
    free ports (bench/system.py) that may read ``data_dir``; None without ``--api``."""
    if api != "up":
        yield api
        return
    import tempfile

    from system import running_system

    with tempfile.TemporaryDirectory() as tmp, running_system(Path(tmp), allowed=[data_dir]) as system:
        yield system.api


def raw_s3_reads(url: str, size: int, storage_options: dict, repeat: int) -> dict:
    """Plain s3fs ranged reads of the object, 64 MiB at a time, 2 at once (2 workers)."""
    import fsspec

    fs, key = fsspec.core.url_to_fs(url, **storage_options)
    ranges = [(start, min(start + CHUNK_BYTES, size)) for start in range(0, size, CHUNK_BYTES)]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            got = sum(pool.map(lambda r: len(fs.cat_file(key, start=r[0], end=r[1])), ranges))
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "sum": None, "peak_rss": None, "bytes": got}


def s3_rows(client, path: Path, block_bytes: int, repeat: int) -> dict:
    import fsspec

    from tests.moto_s3 import new_bucket
    from tests.servers import free_port

    with shaped_s3.start("moto", "--port", str(free_port())) as endpoint:
        options = {**S3_CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint}}
        bucket = new_bucket(endpoint, **S3_CREDENTIALS)
        fsspec.filesystem("s3", **options).put_file(str(path), f"{bucket}/{path.name}")
        url = f"s3://{bucket}/{path.name}"
        size = path.stat().st_size
        return {
            "s3fs ranged reads only (moto)": raw_s3_reads(url, size, options, repeat),
            "ours, Dask, over S3 (moto)": on_cluster(client, our_job(client, url, block_bytes, options), repeat),
        }


# --- the ceiling: the same blocks over plain processes, and what the cores give ---------

SPIN_ADDITIONS = 2 * 10**7


def spin() -> float:
    """Seconds a pure-Python loop of SPIN_ADDITIONS additions takes: CPU and nothing else."""
    start = time.perf_counter()
    total = 0
    for i in range(SPIN_ADDITIONS):
        total += i
    return time.perf_counter() - start


@contextmanager
def plain_processes(n: int):
    """``n`` worker processes, started and the kernel compiled before anything is timed."""
    with multiprocessing.get_context("spawn").Pool(n, initializer=warm_up) as pool:
        pool.map(time.sleep, [0.5] * n, chunksize=1)  # each process takes one: all are up
        yield pool


def cpu_check(pool) -> str:
    """What the cores give today: one pure-Python loop alone, then two at once."""
    alone = pool.apply(spin)
    together = pool.starmap(spin, [()] * 2, chunksize=1)
    return (
        f"CPU check: a pure-Python loop takes {alone:.2f} s alone, "
        f"{together[0]:.2f} s and {together[1]:.2f} s two at once: the cores give {2 * alone / max(together):.2f}x one"
    )


def sum_blocks_here(url: str, blocks: list[tuple[int, int]]) -> dict:
    return combine([sum_block(url, start, end) for start, end in blocks])


def ceiling_jobs(pool, n: int, path: Path, block_bytes: int) -> dict:
    """``sum_block`` over the job's blocks in one plain process, then over ``n``: the
    parallel ceiling for our Dask job, with no scheduler, client or transfers."""
    url = path.as_uri()
    blocks = plan_blocks(path.stat().st_size, block_bytes)
    return {
        "same blocks, 1 plain process": lambda: pool.apply(sum_blocks_here, (url, blocks)),
        f"same blocks, {n} plain processes": lambda: combine(
            pool.starmap(sum_block, [(url, start, end) for start, end in blocks], chunksize=1)
        ),
    }


def in_turns(jobs: dict, repeat: int) -> dict:
    """Each job's best seconds of ``repeat`` runs after one warm-up run, the runs in turns
    (a round of all of them, then again): a neighbour that comes and goes on this shared VM
    then weighs on every contender alike, not on whichever ran during it. A job returns
    {"sum": ... or None, "bytes": ... (optional), "seconds": ... (optional: a job that
    times itself, e.g. in a child process, without the child's start)}; its row is the
    warm-up's, with the best "seconds"."""
    rows = {name: {**job(), "seconds": float("inf")} for name, job in jobs.items()}
    for _ in range(repeat):
        for name, job in jobs.items():
            start = time.perf_counter()
            seconds = job().get("seconds", time.perf_counter() - start)
            rows[name]["seconds"] = min(rows[name]["seconds"], seconds)
    return rows


# --- the run ----------------------------------------------------------------------------


def warm_page_cache(path: Path) -> None:
    with open(path, "rb", buffering=0) as file:
        while file.read(CHUNK_BYTES):
            pass


def where_the_time_goes(client, job, blocks: int, repeat: int) -> str:
    """``repeat`` more runs of our job, the fastest's tasks' compute spans from the
    scheduler's task stream: how much of the job's wall time the workers spent in its
    tasks, how long a block took, and what is left to Dask (from submission to the first
    task, between a worker's tasks, from the last task to the result)."""
    from distributed import get_task_stream

    runs = []
    for _ in range(repeat):
        with get_task_stream(client) as stream:
            start = time.time()  # the task stream's clock; the workers share this machine's
            job()
            end = time.time()
        runs.append((end - start, start, stream.data))
    wall, start, tasks = min(runs, key=lambda run: run[0])
    spans: dict[str, list[tuple[float, float]]] = {}  # worker -> its tasks' (start, stop)
    block_seconds = []
    for task in tasks:
        for span in task["startstops"]:
            if span["action"] == "compute":
                spans.setdefault(task["worker"], []).append((span["start"], span["stop"]))
                if "-reduce-" not in task["key"]:
                    block_seconds.append(span["stop"] - span["start"])
    busy = sum(stop - begin for worker in spans.values() for begin, stop in worker)
    first = min(begin for worker in spans.values() for begin, _ in worker) - start
    last = start + wall - max(stop for worker in spans.values() for _, stop in worker)
    return (
        f"where the time goes, the fastest of {repeat} more runs of ours: {wall:.3f} s, {len(block_seconds)} of "
        f"{blocks} blocks at {1e3 * sum(block_seconds) / len(block_seconds):.0f} ms each (mean); the {len(spans)} "
        f"workers compute {busy / (len(spans) * wall):.0%} of it; the first task starts {1e3 * first:.0f} ms in, the "
        f"result comes {1e3 * last:.0f} ms after the last task; between a worker's tasks: "
        f"{1e3 * (wall - first - last - busy / len(spans)):.0f} ms per worker"
    )


def cluster_rows(path: Path, shape: str, args, turns: dict) -> dict:
    """Our job on a LocalCluster of 2 workers, in turns with the ``turns`` jobs (the
    ceiling, DuckDB, Polars, the API), then the contenders that run on the same cluster."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, preload=["compute.preload"], dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(reset_peak_rss)
        ours, ours_job = "ours, Dask, 2 workers", our_job(client, path.as_uri(), args.block_bytes)
        rows = in_turns({**turns, ours: lambda: {"sum": ours_job()}}, args.repeat)
        rows[ours]["peak_rss"] = max(client.run(peak_rss).values())
        blocks = len(plan_blocks(path.stat().st_size, args.block_bytes))
        print(where_the_time_goes(client, ours_job, blocks, args.repeat))
        if args.ceiling_only or args.jobs_only:
            return rows
        for block_bytes in args.sweep:
            job = our_job(client, path.as_uri(), block_bytes)
            rows[f"ours, Dask, {block_bytes / MiB:g} MiB blocks"] = on_cluster(client, job, args.repeat)
        rows["dask.dataframe read_csv"] = on_cluster(client, dask_dataframe_job(path, shape), args.repeat)
        if args.s3:
            rows.update(s3_rows(client, path, args.block_bytes, args.repeat))
    return rows


def print_table(rows: dict, size: int, answer: int) -> None:
    ours = rows["ours, Dask, 2 workers"]["seconds"]
    print(f"{'':34} {'seconds':>8} {'GB/s':>6} {'x ours':>7} {'peak RSS':>9}  exact")
    for name, row in rows.items():
        gbps = row.get("bytes", size) / row["seconds"] / 1e9
        rss = f"{row['peak_rss'] / MiB:6.0f} MiB" if row.get("peak_rss") else "        -"
        exact = "-" if row["sum"] is None else ("yes" if row["sum"] == answer else f"NO ({row['sum']})")
        print(f"{name:34} {row['seconds']:8.3f} {gbps:6.2f} {row['seconds'] / ours:7.2f} {rss}  {exact}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("100MB"))
    parser.add_argument("--shape", choices=["lines", "wide"], default="lines")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--block-bytes", type=parse_size, default=DEFAULT_BLOCK_BYTES)
    parser.add_argument(
        "--sweep",
        type=lambda text: [parse_size(size) for size in text.split(",")],
        default=[],
        help="also run our job with these block sizes, e.g. 8MiB,32MiB,128MiB",
    )
    parser.add_argument(
        "--ceiling-only",
        action="store_true",
        help="only the plain-process ceiling and our Dask job, in turns (and --api): no other contender",
    )
    parser.add_argument(
        "--kernels-only", action="store_true", help="only the kernel paths against numba and pread, one core"
    )
    parser.add_argument(
        "--jobs-only",
        action="store_true",
        help="only the whole-file jobs that run in turns: DuckDB, Polars, the ceiling, ours (and --api)",
    )
    parser.add_argument(
        "--api", help="also submit the job to this SpaceTime API URL, or to `spacetime up` of our own: up"
    )
    parser.add_argument("--s3", action="store_true", help="also run the job over S3 (a moto server)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child, args.path, args.shape, args.repeat)

    path, answer = ensure_file(args.size, args.shape)
    warm_page_cache(path)
    print(
        f"{path.name}: {answer['bytes'] / 1e9:.3f} GB, {answer['count']} numbers; "
        f"block {args.block_bytes / MiB:.0f} MiB; best of {args.repeat}; {os.cpu_count()} CPUs"
    )
    if not args.jobs_only:
        kernel_rows(path, answer["sum"], args.repeat)
    if args.kernels_only:
        return
    cores = max(os.cpu_count() or 1, 2)  # the CPU check runs two at once
    with plain_processes(cores) as pool, api_for(args.api, path.parent) as api:
        print(cpu_check(pool))
        single = [] if args.ceiling_only or args.jobs_only else SINGLE_CORE
        rows = {name: in_child(name, path, args.shape, args.repeat) for name in single}
        turns = ceiling_jobs(pool, cores, path, args.block_bytes)
        if not args.ceiling_only:
            turns.update({name: lambda name=name: in_child(name, path, args.shape, 1) for name in OTHERS})
        if api:
            turns[API] = lambda: api_job(api, path)
        rows.update(cluster_rows(path, args.shape, args, turns))
        print_table(rows, answer["bytes"], answer["sum"])
        print(f"{cpu_check(pool)} (again, after the runs)")
    print_ratios(rows, cores)


def print_ratios(rows: dict, cores: int) -> None:
    """Our Dask job and the API's against the ceiling, and the API's against the others."""
    ceiling = rows[f"same blocks, {cores} plain processes"]["seconds"]
    seconds = {name: row["seconds"] for name, row in rows.items()}
    print(f"ours, Dask, 2 workers: {ceiling / seconds['ours, Dask, 2 workers']:.2f}x the plain-process ceiling")
    if API in seconds:
        others = ", ".join(f"{seconds[name] / seconds[API]:.2f}x {name}" for name in OTHERS if name in seconds)
        print(f"{API}: {ceiling / seconds[API]:.2f}x the plain-process ceiling; {others}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))  # tests.moto_s3, for --s3
    main()
