"""What a job's performance report costs the scheduler that every job shares.

    .venv/bin/python -m bench.report_cost [--jobs 40]

The same image job (cat.png, one task) runs N times in three ways on one LocalCluster
(2 worker processes; the scheduler runs in this process): bare; followed by our capture
(compute.report.capture_trace: one task-stream call to the scheduler, the profiles asked
of the workers directly); inside Dask's ``performance_report`` (the scheduler builds the
page). The figure is the CPU time of the scheduler's event-loop thread per job, read from
the kernel's per-thread counters: what a report takes from every other job. Rendering our
page (render_report, done by the API on first request) is timed apart: it never runs on
the scheduler.
"""

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil
from distributed import Client, LocalCluster, performance_report

from bench.system import core_check
from compute.image import randomize_image
from compute.report import capture_trace, render_report

CAT = Path(__file__).parents[1] / "tests" / "fixtures" / "cat.png"


def thread_cpu_s(native_id: int) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    raise LookupError(f"no thread {native_id} in this process")


def per_job_ms(client: Client, scheduler_thread: int, jobs: int, run) -> float:
    """Scheduler-thread CPU milliseconds per call of ``run(i)``."""
    for i in range(3):  # warm up connections, the profile rpc, bokeh
        run(-1 - i)
    start = thread_cpu_s(scheduler_thread)
    for i in range(jobs):
        run(i)
    return (thread_cpu_s(scheduler_thread) - start) / jobs * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    png = CAT.read_bytes()
    print(core_check(), flush=True)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        client.get_task_stream(start=0, stop=0)  # the recording the dispatchers start
        scheduler_thread = client.run_on_scheduler(threading.get_native_id)
        traces = []

        def bare(i: int, prefix: str = "bare") -> float:
            started = time.time()
            client.submit(randomize_image, png, key=f"randomize-{prefix}{i}-0").result()
            return started

        def ours(i: int) -> None:
            started = bare(i, "ours")
            traces.append(capture_trace(client, f"randomize-ours{i}", started, time.time()))

        def dasks(i: int) -> None:
            with performance_report(filename=f"{tmp}/dask-{i}.html"):
                bare(i, "dask")

        rounds = {name: [] for name in ("bare", "ours", "dask")}
        for _ in range(2):  # interleaved, so that a noisy minute touches all three
            rounds["bare"].append(per_job_ms(client, scheduler_thread, args.jobs, bare))
            rounds["ours"].append(per_job_ms(client, scheduler_thread, args.jobs, ours))
            rounds["dask"].append(per_job_ms(client, scheduler_thread, max(5, args.jobs // 4), dasks))
        best = {name: min(values) for name, values in rounds.items()}
        start = time.perf_counter()
        pages = [render_report(trace, {"token": "x"}, "job") for trace in traces[:5]]
        render_ms = (time.perf_counter() - start) / len(pages) * 1e3

    dask_jobs = max(5, args.jobs // 4)
    ours, dasks = best["ours"] - best["bare"], best["dask"] - best["bare"]
    print(f"scheduler event-loop CPU per image job, best of 2 rounds ({args.jobs} jobs; Dask's report: {dask_jobs})")
    print(f"  bare job                              {best['bare']:7.2f} ms")
    print(f"  + our capture (task stream, profiles) {best['ours']:7.2f} ms   a report costs it {ours:6.2f} ms")
    print(f"  in Dask's performance_report          {best['dask']:7.2f} ms   a report costs it {dasks:6.2f} ms")
    print(f"  Dask's report over ours: {dasks / max(ours, 0.01):.0f}x")
    print(f"rendering our page (by the API at the first request, never on the scheduler): {render_ms:.0f} ms")


if __name__ == "__main__":
    main()
