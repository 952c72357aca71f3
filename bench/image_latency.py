"""Image job latency and throughput of a whole system (`spacetime up`, started here on free
ports, or a running one with --api).

    .venv/bin/python -m bench.image_latency [--api http://127.0.0.1:5000] [--jobs 200] [--clients 16]

Prints, for cat.png, after the machine check (what the cores give today):
- lead time over sequential jobs: the server's ``lead_s`` (requested -> finished, from
  GET /tasks/{token}) and what the client saw (POST -> first poll that says finished);
- throughput with N concurrent clients, each submitting and waiting in a loop, and the
  CPU each job cost each part of the system (API, dispatchers, scheduler, workers,
  Redis, these clients) during it;
- the compute-only time of ``randomize_image`` in this process, for comparison.
What a performance report costs the scheduler: bench/report_cost.py.
"""

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench.system import core_check, running_system
from compute.image import randomize_image

CAT = Path(__file__).parents[1] / "tests" / "fixtures" / "cat.png"
# Polling adds load on the same 2 cores that run the jobs; 16 clients polling fast would
# mostly measure the API answering polls on the same 2 cores.
SEQUENTIAL_POLL_S = 0.01
CONCURRENT_POLL_S = 0.05


def run_job(http: httpx.Client, png: bytes, poll_s: float = SEQUENTIAL_POLL_S) -> tuple[str, float]:
    """Submit, poll until finished, fetch the result; return the token and client-side seconds."""
    start = time.perf_counter()
    token = http.post("/randomize", content=png, headers={"Content-Type": "image/png"}).json()["token"]
    while (status := http.get(f"/randomize/{token}/status").json()["status"]) not in ("finished", "errored"):
        time.sleep(poll_s)
    seen = time.perf_counter() - start
    if status != "finished" or http.get(f"/randomize/{token}/result").status_code != 200:
        raise RuntimeError(f"job {token} ended {status}")
    return token, seen


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def sequential(api: str, png: bytes, jobs: int) -> None:
    with httpx.Client(base_url=api) as http:
        for _ in range(10):  # warm up connections and workers
            run_job(http, png)
        runs = [run_job(http, png) for _ in range(jobs)]
        leads = [http.get(f"/tasks/{token}").json()["lead_s"] for token, _ in runs]
    seen = [s for _, s in runs]
    print(f"sequential, {jobs} jobs       p50        p95")
    print(f"  server lead_s        {percentile(leads, 50) * 1e3:7.1f} ms {percentile(leads, 95) * 1e3:7.1f} ms")
    print(f"  client-observed      {percentile(seen, 50) * 1e3:7.1f} ms {percentile(seen, 95) * 1e3:7.1f} ms")


def concurrent(api: str, png: bytes, clients: int, per_client: int) -> int:
    def client_loop():
        with httpx.Client(base_url=api, headers={"X-Client-Id": threading.current_thread().name}) as http:
            for _ in range(per_client):
                run_job(http, png, CONCURRENT_POLL_S)

    threads = [threading.Thread(target=client_loop, name=f"bench-{i}") for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    total = clients * per_client
    print(f"concurrent, {clients} clients x {per_client} jobs: {total / elapsed:.1f} jobs/s ({elapsed:.1f} s)")
    return total


def compute_only(png: bytes, repeats: int = 50) -> None:
    randomize_image(png)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        randomize_image(png)
        times.append(time.perf_counter() - start)
    print(f"randomize_image alone (this process): p50 {statistics.median(times) * 1e3:.1f} ms")


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
        before = {role: cpu_s(group) for role, group in processes.items()}
        jobs = concurrent(api, png, args.clients, args.per_client)
        for role, group in processes.items():
            print(f"  CPU per job, {role:18} {(cpu_s(group) - before[role]) / jobs * 1e3:6.1f} ms")
    compute_only(png)


if __name__ == "__main__":
    main()
