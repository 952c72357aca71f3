"""What the system adds around an even-sum job: through the API against the same job
submitted straight to the same cluster, in one run.

    .venv/bin/python -m bench.api_overhead [--size 1GiB] [--repeat 5]

Starts `spacetime up` on free ports (its own data folder, the benchmark files allowed by
URL), then alternates, ``--repeat`` times each:
- direct: the same job (``compute.even_sum.BlockSum``) from a Dask client of this process
  on the system's own bulk workers, every block at once: no queue, no Redis, no pacing;
- through the API: POST /even-sum {"url"} and poll until it ends; the job's record gives
  ``lead_s`` (requested -> finished) and ``exec_s``, and the client-observed time is
  printed too.
Target (issue 9): lead time at most 1.1x the direct job + 50 ms. Files are
bench/datagen.py's (one number per line, exact answers), read once first.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from distributed import Client

from bench.datagen import ensure_file, parse_size
from bench.system import core_check, running_system
from compute.defaults import BULK_RESOURCE
from compute.even_sum import BlockSum

# Polls are load on the same 2 cores as the job; lead_s is measured by the server anyway.
POLL_S = 0.05


def through_api(api: str, path: Path) -> dict:
    with httpx.Client(base_url=api, timeout=600) as http:
        start = time.perf_counter()
        token = http.post("/even-sum", json={"url": path.as_uri()}).json()["token"]
        while http.get(f"/even-sum/{token}/status").json()["status"] not in ("finished", "errored"):
            time.sleep(POLL_S)
        seen = time.perf_counter() - start
        record = http.get(f"/tasks/{token}").json()
        result = http.get(f"/even-sum/{token}/result").json()
    return {"seen": seen, "lead": record["lead_s"], "exec": record["exec_s"], "sum": result["sum"]}


def direct(client: Client, path: Path) -> dict:
    """Every block at once, on the workers the API's job gets (the bulk pool)."""
    start = time.perf_counter()
    job = BlockSum(client, path.as_uri(), key_prefix=f"direct-{time.time_ns()}", resources={BULK_RESOURCE: 1})
    result = job.run()
    return {"seconds": time.perf_counter() - start, "sum": result["sum"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    path, answer = ensure_file(args.size, "lines")
    with open(path, "rb") as f:  # into the page cache, for both
        while f.read(64 << 20):
            pass
    print(core_check(), flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_system(Path(tmp), allowed=[path.parent]) as system,
        Client(system.scheduler, timeout=60) as client,
    ):
        direct(client, path)  # warm: connections, the kernel's cache
        through_api(system.api, path)
        runs = {"direct": [], "api": []}
        for _ in range(args.repeat):
            runs["direct"].append(direct(client, path))
            runs["api"].append(through_api(system.api, path))
    assert all(run["sum"] == answer["sum"] for group in runs.values() for run in group), "a wrong sum"
    job = statistics.median(run["seconds"] for run in runs["direct"])
    lead = statistics.median(run["lead"] for run in runs["api"])
    work = statistics.median(run["exec"] for run in runs["api"])
    seen = statistics.median(run["seen"] for run in runs["api"])
    target = 1.1 * job + 0.05
    print(f"{path.name}: {args.size / 1e9:.2f} GB, medians of {args.repeat}, on `spacetime up`'s own cluster")
    print(f"  direct job (BlockSum from a client)   {job:7.3f} s   {args.size / job / 1e9:5.2f} GB/s")
    print(f"  through the API: lead_s               {lead:7.3f} s   {lead / job:5.2f}x the direct job")
    print(f"                   exec_s               {work:7.3f} s   (lead - exec: {(lead - work) * 1e3:.0f} ms)")
    print(f"                   client-observed      {seen:7.3f} s   ({POLL_S * 1e3:.0f} ms polls)")
    print(f"  target: lead <= 1.1 x direct + 50 ms = {target:.3f} s: {'met' if lead <= target else 'NOT MET'}")


if __name__ == "__main__":
    main()
