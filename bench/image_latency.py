"""Image job latency and throughput against a running system (`make run` / `spacetime up`).

    .venv/bin/python bench/image_latency.py [--api http://127.0.0.1:5000] [--jobs 200] [--clients 16]

Prints, for cat.png:
- lead time over sequential jobs: the server's ``lead_s`` (requested -> finished, from
  GET /tasks/{token}) and what the client saw (POST -> first poll that says finished);
- throughput with N concurrent clients, each submitting and waiting in a loop;
- the compute-only time of ``randomize_image`` in this process, for comparison;
- what a Dask performance report adds to one image task on the same cluster (this is
  why image jobs take one only 1 in SPACETIME_IMAGE_REPORT_EVERY).
"""

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from distributed import Client

from compute.image import randomize_image
from compute.report import JobReport

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


def concurrent(api: str, png: bytes, clients: int, per_client: int) -> None:
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


def compute_only(png: bytes, repeats: int = 50) -> None:
    randomize_image(png)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        randomize_image(png)
        times.append(time.perf_counter() - start)
    print(f"randomize_image alone (this process): p50 {statistics.median(times) * 1e3:.1f} ms")


def report_overhead(scheduler: str, png: bytes, repeats: int = 20) -> None:
    """One image task on the cluster, bare and inside a JobReport, median of ``repeats``."""
    with Client(scheduler) as client, tempfile.TemporaryDirectory() as folder:
        client.get_task_stream(start=0, stop=0)

        def one(report: bool) -> float:
            start = time.perf_counter()
            if report:
                with JobReport(f"{folder}/r.html", "bench"):
                    client.submit(randomize_image, png, pure=False).result()
            else:
                client.submit(randomize_image, png, pure=False).result()
            return time.perf_counter() - start

        bare = statistics.median(one(False) for _ in range(repeats))
        with_report = statistics.median(one(True) for _ in range(repeats))
    print(
        f"one image task on the cluster: {bare * 1e3:.1f} ms bare, {with_report * 1e3:.1f} ms with a "
        f"performance report (+{(with_report - bare) * 1e3:.0f} ms, {with_report / bare:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:5000")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=20)
    parser.add_argument("--scheduler", default="tcp://127.0.0.1:8786", help="the system's Dask scheduler")
    args = parser.parse_args()
    png = CAT.read_bytes()
    sequential(args.api, png, args.jobs)
    concurrent(args.api, png, args.clients, args.per_client)
    compute_only(png)
    report_overhead(args.scheduler, png)


if __name__ == "__main__":
    main()
