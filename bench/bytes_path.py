"""Which way an image job's bytes should travel: through the Dask scheduler, straight to a
worker, or not through Dask at all (the worker task reads and writes Redis itself).

    .venv/bin/python -m bench.bytes_path [--jobs 300] [--loops 4] [--rounds 2]

Starts its own redis-server (no persistence), Dask scheduler and 2 worker processes (one
thread each) on free loopback ports; this process plays the dispatcher, with ``--loops``
job loops at once. Each job moves cat.png's bytes in and bytes the size of its shuffled
output back, the way each transport would:

- ``via scheduler``: the dispatcher GETs the input from Redis, ``submit(work, png)``,
  ``future.result()``, SETs the output (the image job before issue 9);
- ``scatter/gather``: the same, but the input is scattered straight to a worker and the
  result gathered straight from it (``direct=True``): the scheduler sees only keys;
- ``worker <-> Redis``: ``submit(work_stored, url, keys)``; the task GETs the input and
  SETs the output itself, with compute/stored.py's per-process client (the image job now).

The task does no work beyond that, so what is measured is the transport. For each, in
turns (``--rounds``), it prints jobs/s and the CPU each job cost each process, and the
ratio of every figure to the chosen way's (worker <-> Redis) in the same round. Figures
are CPU time, not wall time, so they hold up better than throughput on a shared machine;
read them beside the core check printed first.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import cache

import psutil
from distributed import Client
from redis import Redis

from backend.dispatch.cluster import record_tasks
from bench import bytes_path as tasks
from bench.image_latency import cpu_s
from bench.system import REPO, core_check
from compute.image import randomize_image
from compute.stored import redis_at
from tests.servers import free_port

CAT = REPO / "tests" / "fixtures" / "cat.png"
INPUT_KEY = "bench:input"
OUTPUT_TTL_S = 60  # outputs only need to exist; they expire so that Redis stays small
WORKERS = 2
WARM_UP_JOBS = 20
START_TIMEOUT_S = 60
CHOSEN = "worker <-> Redis"


# -- what the workers run (importable: the workers start with the repository on PYTHONPATH) --


@cache
def output_bytes(size: int) -> bytes:
    """Random, so that no transport gains by compressing it (a PNG does not compress)."""
    return os.urandom(size)


def work(png: bytes, out_size: int) -> bytes:
    """A task that takes the input as an argument and returns the output."""
    return output_bytes(out_size)


def work_stored(redis_url: str, input_key: str, output_key: str, out_size: int) -> int:
    """A task that reads the input from Redis and stores the output there (compute/stored.py)."""
    redis = redis_at(redis_url, None)
    png = redis.get(input_key)
    redis.set(output_key, output_bytes(out_size), ex=OUTPUT_TTL_S)
    return len(png)


# -- the three ways, as the dispatcher's side of one job --------------------------------------


class Transports:
    """The dispatcher's side of one job, each way. The tasks are this module's functions
    imported by name (below): run as ``-m``, this file is ``__main__``, whose functions
    cloudpickle would send by value with each task, and their caches with them."""

    def __init__(self, client: Client, redis: Redis, redis_url: str, out_size: int):
        self.client = client
        self.redis = redis
        self.redis_url = redis_url
        self.out_size = out_size

    def via_scheduler(self, job: str) -> None:
        png = self.redis.get(INPUT_KEY)
        output = self.client.submit(tasks.work, png, self.out_size, key=job, pure=False).result()
        self.redis.set(f"{job}:output", output, ex=OUTPUT_TTL_S)

    def scatter_gather(self, job: str) -> None:
        png = self.redis.get(INPUT_KEY)
        data = self.client.scatter(png, direct=True, hash=False)
        future = self.client.submit(tasks.work, data, self.out_size, key=job, pure=False)
        output = self.client.gather(future, direct=True)
        self.redis.set(f"{job}:output", output, ex=OUTPUT_TTL_S)

    def worker_redis(self, job: str) -> None:
        output_key = f"{job}:output"
        self.client.submit(tasks.work_stored, self.redis_url, INPUT_KEY, output_key, self.out_size, key=job).result()

    def all(self) -> dict[str, Callable[[str], None]]:
        return {"via scheduler": self.via_scheduler, "scatter/gather": self.scatter_gather, CHOSEN: self.worker_redis}


# -- the processes ---------------------------------------------------------------------------


@contextmanager
def started(argv: list[str]) -> Iterator[subprocess.Popen]:
    """A process run from the repository root, so that the scheduler and the workers import
    this module's tasks (and compute) by name; stopped on exit."""
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_cluster(stack: ExitStack) -> tuple[str, str, dict[str, list[psutil.Process]]]:
    """redis-server, a scheduler and the workers: the Redis URL, the scheduler's address and
    the processes by role (this one is the dispatcher)."""
    redis_port, scheduler_port = free_port(), free_port()
    server = shutil.which("redis-server") or "redis-server"
    redis = stack.enter_context(
        started([server, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"])
    )
    address = f"tcp://127.0.0.1:{scheduler_port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", str(scheduler_port)]
    scheduler = stack.enter_context(started([*dask, "--host", "127.0.0.1", "--no-dashboard"]))
    dask = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny"]
    workers = [stack.enter_context(started([*dask, "--host", "127.0.0.1", "--no-dashboard"])) for _ in range(WORKERS)]
    processes = {
        "redis": [psutil.Process(redis.pid)],
        "scheduler": [psutil.Process(scheduler.pid)],
        "workers": [psutil.Process(w.pid) for w in workers],
        "dispatcher": [psutil.Process()],
    }
    return f"redis://127.0.0.1:{redis_port}/0", address, processes


def run(transport: Callable[[str], None], name: str, jobs: int, loops: int) -> float:
    """``jobs`` jobs over ``loops`` threads; the seconds it took. A job that fails stops the run."""
    per_loop = jobs // loops
    prefix = f"{name.replace(' ', '')}-{time.monotonic_ns()}"

    def loop(i: int) -> None:
        for j in range(per_loop):
            transport(f"{prefix}-{i}-{j}")

    start = time.perf_counter()
    with ThreadPoolExecutor(loops) as pool:
        for done in [pool.submit(loop, i) for i in range(loops)]:
            done.result()
    return time.perf_counter() - start


def measure(transport, name, jobs, loops, processes) -> dict[str, float]:
    """jobs/s and CPU ms per job of each process role (and their total)."""
    run(transport, f"warm-{name}", WARM_UP_JOBS, 1)
    before = {role: cpu_s(group) for role, group in processes.items()}
    done = (jobs // loops) * loops
    seconds = run(transport, name, done, loops)
    figures = {role: (cpu_s(group) - before[role]) / done * 1e3 for role, group in processes.items()}
    return {"jobs/s": done / seconds, **figures, "total": sum(figures.values())}


def print_round(number: int, results: dict[str, dict[str, float]]) -> None:
    columns = list(next(iter(results.values())))
    print(f"round {number}: {'':18}" + "".join(f"{c:>11}" for c in columns))
    for name, figures in results.items():
        print(f"  {name:25}" + "".join(f"{v:11.2f}" for v in figures.values()))
    chosen = results[CHOSEN]
    for name, figures in results.items():
        if name != CHOSEN:
            ratios = "".join(f"{figures[c] / chosen[c]:10.2f}x" if chosen[c] else f"{'-':>11}" for c in columns)
            print(f"  {name + ' / chosen':25}{ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(core_check(), flush=True)
    png = CAT.read_bytes()
    out_size = len(randomize_image(png))
    print(
        f"{len(png):,} bytes in and {out_size:,} out a job (cat.png and its shuffle), {args.jobs} jobs a run, "
        f"{args.loops} job loops; CPU in ms a job, per process role",
        flush=True,
    )
    with ExitStack() as stack:
        redis_url, address, processes = start_cluster(stack)
        redis = stack.enter_context(Redis.from_url(redis_url))
        client = stack.enter_context(Client(address, timeout=START_TIMEOUT_S))
        client.wait_for_workers(WORKERS, timeout=START_TIMEOUT_S)
        record_tasks(client)  # as every dispatcher does: the scheduler records task timings
        redis.set(INPUT_KEY, png)
        transports = Transports(client, redis, redis_url, out_size).all()
        for number in range(1, args.rounds + 1):
            results = {
                name: measure(transport, name, args.jobs, args.loops, processes)
                for name, transport in transports.items()
            }
            print_round(number, results)


if __name__ == "__main__":
    main()
