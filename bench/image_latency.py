"""Image job latency and throughput of a whole system (`spacetime up`, started here on free
ports, or a running one with --api).

    .venv/bin/python -m bench.image_latency [--api http://127.0.0.1:5000] [--jobs 200] [--clients 16]

Prints, for cat.png, after the machine check (what the cores give today):
- lead time over sequential jobs: the server's ``lead_s`` (requested -> finished, from
  GET /tasks/{token}) and what the client saw (POST -> the result in hand);
- throughput with N concurrent clients, each submitting and waiting in a loop, in two
  phases one after the other: clients that ask for the result with ``?wait=`` (answered
  when the job ends: 2 requests a job) and clients that poll the status every 50 ms, then
  fetch the result (as before ``?wait=``), the ratio of
  the two, the HTTP requests per job, and the CPU each job cost each part of the
  system (API, dispatchers, scheduler, workers, Redis, these clients) in each phase;
- the compute-only time of ``randomize_image`` in this process, for comparison;
- the same jobs as plain Dask tasks and nothing else (no API, Redis or dispatcher), from
  as many client threads: the ceiling of one Dask task per image job;
- the bare shuffle's throughput, one process per core calling ``randomize_image`` on
  cat.png in a loop, measured before the concurrent phases and after plain Dask, and the
  system's and plain Dask's throughput as fractions of it (issue 20's target: at least 0.5x).
What a performance report costs the scheduler: bench/report_cost.py.
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import psutil
from distributed import Client as DaskClient
from distributed import LocalCluster

from bench.system import core_check, running_system
from compute.image import randomize_image

CAT = Path(__file__).parents[1] / "tests" / "fixtures" / "cat.png"
# A waiting status request is answered when its job ends, or after this long.
WAIT_S = 30
# The polling clients' pause between status requests (clients before ?wait=). Polling adds
# load on the same 2 cores that run the jobs; 16 clients polling faster would mostly
# measure the API answering polls.
CONCURRENT_POLL_S = 0.05
FINAL = ("finished", "errored")
# How long each process of the bare shuffle loops.
BARE_S = 10.0


@dataclass
class Phase:
    """One concurrent phase: how its clients wait, and what it measured."""

    name: str
    poll_s: float | None  # None: ?wait=
    jobs: int = 0
    elapsed_s: float = 0.0
    requests: int = 0  # every HTTP request of the clients
    cpu_s: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds in the phase


def client(api: str, name: str | None = None) -> httpx.Client:
    headers = {"X-Client-Id": name} if name else None
    return httpx.Client(base_url=api, headers=headers, timeout=WAIT_S + 30)


def run_job(http: httpx.Client, png: bytes, poll_s: float | None = None) -> tuple[str, float, int]:
    """Submit, wait until the job ends, fetch the result; return the token, client-side
    seconds and the HTTP requests it took. Without ``poll_s``: one GET of the result with
    ``?wait=`` (answered when the job ends); with it: status polls every ``poll_s``, then
    the result."""
    start = time.perf_counter()
    token = http.post("/randomize", content=png, headers={"Content-Type": "image/png"}).json()["token"]
    requests = 1
    if poll_s is None:
        result = http.get(f"/randomize/{token}/result", params={"wait": WAIT_S})
        seen, requests = time.perf_counter() - start, requests + 1
        if result.status_code != 200:
            status = http.get(f"/randomize/{token}/status").json()
            raise RuntimeError(f"job {token} ended {status}")
        return token, seen, requests
    while (status := http.get(f"/randomize/{token}/status").json()["status"]) not in FINAL:
        requests += 1
        time.sleep(poll_s)
    seen = time.perf_counter() - start
    if status != "finished" or http.get(f"/randomize/{token}/result").status_code != 200:
        raise RuntimeError(f"job {token} ended {status}")
    return token, seen, requests + 2


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def sequential(api: str, png: bytes, jobs: int) -> None:
    with client(api) as http:
        for _ in range(10):  # warm up connections and workers
            run_job(http, png)
        runs = [run_job(http, png) for _ in range(jobs)]
        leads = [http.get(f"/tasks/{token}").json()["lead_s"] for token, _, _ in runs]
    seen = [s for _, s, _ in runs]
    print(f"sequential, {jobs} jobs       p50        p95")
    print(f"  server lead_s        {percentile(leads, 50) * 1e3:7.1f} ms {percentile(leads, 95) * 1e3:7.1f} ms")
    print(f"  client-observed      {percentile(seen, 50) * 1e3:7.1f} ms {percentile(seen, 95) * 1e3:7.1f} ms")


def concurrent(api: str, png: bytes, clients: int, per_client: int, phase: Phase) -> None:
    """``clients`` threads, each running ``per_client`` jobs one after the other."""
    lock = threading.Lock()

    def client_loop():
        with client(api, threading.current_thread().name) as http:
            for _ in range(per_client):
                requests = run_job(http, png, phase.poll_s)[2]
                with lock:
                    phase.requests += requests

    threads = [threading.Thread(target=client_loop, name=f"bench-{i}") for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.elapsed_s = time.perf_counter() - start
    phase.jobs = clients * per_client


def measured(api: str, png: bytes, clients: int, per_client: int, phase: Phase, processes: dict) -> Phase:
    """Run the phase, with the CPU each role of the system spent in it."""
    before = {role: cpu_s(group) for role, group in processes.items()}
    concurrent(api, png, clients, per_client, phase)
    phase.cpu_s = {role: cpu_s(group) - before[role] for role, group in processes.items()}
    return phase


def compare(waiting: Phase, polling: Phase) -> None:
    """The two phases side by side, with the ratio wait / poll."""
    rows: list[tuple[str, Callable[[Phase], float], str]] = [
        ("throughput (jobs/s)", lambda p: p.jobs / p.elapsed_s, ""),
        ("HTTP requests per job", lambda p: p.requests / p.jobs, ""),
    ]
    rows += [(f"CPU per job, {role}", partial(cpu_ms_per_job, role=role), " ms") for role in waiting.cpu_s]
    width = max(len(what) for what, _, _ in rows) + 2
    print(f"  {'':{width}}{waiting.name:>16}{polling.name:>18}{'wait / poll':>13}")
    for what, figure, unit in rows:
        a, b = figure(waiting), figure(polling)
        ratio = f"{a / b:.2f}x" if b else "-"
        print(f"  {what:{width}}{a:>13.1f}{unit:3}{b:>15.1f}{unit:3}{ratio:>13}")


def cpu_ms_per_job(phase: Phase, role: str) -> float:
    return phase.cpu_s[role] / phase.jobs * 1e3


def compute_only(png: bytes, repeats: int = 50) -> None:
    randomize_image(png)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        randomize_image(png)
        times.append(time.perf_counter() - start)
    print(f"randomize_image alone (this process): p50 {statistics.median(times) * 1e3:.1f} ms")


def shuffles_for(seconds: float) -> int:
    """How many times one process shuffles cat.png in ``seconds`` (after one warm-up)."""
    png = CAT.read_bytes()
    randomize_image(png)
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        randomize_image(png)
        done += 1
    return done


def bare_shuffle(seconds: float = BARE_S) -> float:
    """Jobs/s of the shuffle alone, one process per core: the ceiling of the system's throughput."""
    cores = len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(cores) as pool:
        done = sum(pool.map(shuffles_for, [seconds] * cores))
    return done / seconds


def plain_dask(png: bytes, clients: int, per_client: int) -> float:
    """Jobs/s of the same jobs as Dask tasks and nothing else: a LocalCluster of one
    single-threaded worker process per core, ``clients`` threads of this process each
    submitting the shuffle of cat.png (its bytes in the task) and waiting for its result,
    one after the other. The ceiling of one Dask task per image job, with no API, Redis or
    dispatcher. Prints the CPU a job cost (this process: client and scheduler; the workers)."""
    cores = len(os.sched_getaffinity(0))
    with (
        LocalCluster(n_workers=cores, threads_per_worker=1, dashboard_address=None) as cluster,
        DaskClient(cluster) as dask,
    ):
        workers = psutil.Process().children(recursive=True)
        dask.gather([dask.submit(randomize_image, png, pure=False) for _ in range(4 * cores)])  # warm up

        def client_loop() -> None:
            for _ in range(per_client):
                dask.submit(randomize_image, png, pure=False).result()

        here, there = cpu_s([psutil.Process()]), cpu_s(workers)
        threads = [threading.Thread(target=client_loop) for _ in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, jobs = time.perf_counter() - start, clients * per_client
        here, there = cpu_s([psutil.Process()]) - here, cpu_s(workers) - there
    print(
        f"plain Dask, {clients} client threads x {per_client} jobs: {jobs / elapsed:.1f} jobs/s; CPU per job: "
        f"client + scheduler {here / jobs * 1e3:.1f} ms, workers {there / jobs * 1e3:.1f} ms"
    )
    return jobs / elapsed


def roles(root: psutil.Process) -> dict[str, list[psutil.Process]]:
    """The processes of a `spacetime up`, by what they are."""
    found: dict[str, list[psutil.Process]] = {"up (scheduler)": [root]}
    for process in root.children(recursive=True):
        try:
            line = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        role = next((name for name in ("redis-server", "dispatcher", "api") if name in line), None)
        if role is None and "multiprocessing" in line:
            role = "dask workers"
        if role:
            found.setdefault(role, []).append(process)
    found["benchmark clients"] = [psutil.Process()]
    return found


def cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", help="a running system (default: start one, `spacetime up`, on free ports)")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=20)
    args = parser.parse_args()
    png = CAT.read_bytes()
    print(core_check(), flush=True)
    with contextlib.ExitStack() as stack:
        api = args.api
        if api is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            system = stack.enter_context(running_system(tmp))
            api = system.api
            up = psutil.Process(system.process.pid)
        sequential(api, png, args.jobs)
        processes = roles(up) if args.api is None else {}
        bare = [bare_shuffle()]
        print(f"concurrent, {args.clients} clients x {args.per_client} jobs, in each phase", flush=True)
        waiting = measured(api, png, args.clients, args.per_client, Phase(f"?wait={WAIT_S}", None), processes)
        polling = measured(api, png, args.clients, args.per_client, Phase("poll 50 ms", CONCURRENT_POLL_S), processes)
        compare(waiting, polling)
    dask_alone = plain_dask(png, args.clients, args.per_client)
    bare.append(bare_shuffle())
    compute_only(png)
    through, ceiling = waiting.jobs / waiting.elapsed_s, statistics.mean(bare)
    print(
        f"bare shuffle, one process per core: {bare[0]:.1f} jobs/s before, {bare[1]:.1f} after; "
        f"the system (?wait=) {through:.1f} jobs/s: {through / ceiling:.2f}x the bare shuffle; "
        f"plain Dask {dask_alone / ceiling:.2f}x the bare shuffle, the system {through / dask_alone:.2f}x plain Dask"
    )


if __name__ == "__main__":
    main()
