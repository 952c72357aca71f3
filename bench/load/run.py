"""The load test: locust users against a `spacetime up` this script starts on free
loopback ports, then a check that every job the API accepted ended final and exact.

    .venv/bin/python -m bench.load.run [--users 50] [--duration 60] [--faults] [--workdir DIR]

The users (bench/load/locustfile.py) mix image jobs of cat.png, status polls and 1-10 MB
even-sum uploads with known exact answers; each is a client of its own. ``--faults``
also SIGKILLs a random Dask worker process every 20 s and one dispatcher once
(bench/load/faults.py).

It prints locust's p50/p95 per route, the 5xx, connection errors and 429s, the jobs
accepted, final, lost, wrong and claimed more than once (``attempts`` > 1 in the job
record), the load average and what the cores give now (bench/system.py), and a last line
"check: OK" or "check: FAILED" (exit status 1) with what failed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from backend.jobs import keys
from bench.datagen import DATA_DIR
from bench.load.faults import Faults, dispatcher_pids, worker_pids
from bench.load.jobs import EXACT, Journal, SumInput, make_inputs, result_problem, write_inputs
from bench.system import REPO, core_check, running_system
from compute.redis_values import read_value

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MB = 10**6
SIZES = [n * MB for n in range(1, 11)]
FINAL = ("finished", "errored")
# How long a user waits for one job; locust's stop timeout adds a margin, so that users
# still waiting when the run time is over see their jobs end.
JOB_TIMEOUT_S = 150.0
STOP_MARGIN_S = 30.0
# After locust, how long the runner waits for accepted jobs that are not final yet.
DRAIN_S = 120.0
# What `spacetime up`'s dispatchers log when a late attempt's final write was refused.
DISCARDED = "discarded the result of attempt"


@dataclass
class Figures:
    routes: list[dict]  # locust's, per route: method, name, requests, failures, p50_ms, p95_ms
    requests: int
    counts: Counter[str]  # "5xx", "connection errors", "429"
    locust_errors: list[dict]  # locust's failures: method, name, error, occurrences
    accepted: Counter[str] = field(default_factory=Counter)  # jobs per kind
    final: int = 0
    lost: list[str] = field(default_factory=list)  # tokens never final
    wrong: dict[str, str] = field(default_factory=dict)  # token -> what was wrong (errored included)
    claimed_twice: int = 0  # records with attempts > 1
    checked_by_runner: int = 0  # final jobs no user saw end, checked here from Redis

    def problems(self) -> list[str]:
        """What makes the run fail: anything that must be 0 and is not."""
        found = []
        if not self.accepted:
            found.append("no job was accepted")
        for name in ("5xx", "connection errors"):
            if self.counts[name]:
                found.append(f"{self.counts[name]} {name}")
        if self.lost:
            found.append(f"{len(self.lost)} lost jobs: {', '.join(self.lost[:5])}")
        if self.wrong:
            token, why = next(iter(self.wrong.items()))
            found.append(f"{len(self.wrong)} wrong results (e.g. {token}: {why})")
        if failures := sum(e["occurrences"] for e in self.locust_errors):
            found.append(f"locust recorded {failures} failed requests")
        return found

    def print(self) -> None:
        print(f"{'route':<36} {'requests':>8} {'failures':>8} {'p50 ms':>8} {'p95 ms':>8}")
        for r in self.routes:
            route = f"{r['method']} {r['name']}"
            print(f"{route:<36} {r['requests']:>8} {r['failures']:>8} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f}")
        for error in self.locust_errors:
            print(f"  failure x{error['occurrences']}: {error['method']} {error['name']}: {error['error']}")
        c = self.counts
        print(
            f"requests: {self.requests}; 5xx: {c['5xx']}; connection errors: {c['connection errors']}; "
            f"429 (quota, not errors): {c['429']}"
        )
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.accepted.items()))
        total = sum(self.accepted.values())
        print(
            f"jobs accepted: {total} ({kinds}); final: {self.final}; lost: {len(self.lost)}; "
            f"results exact: {total - len(self.lost) - len(self.wrong)}, wrong: {len(self.wrong)} "
            f"({self.checked_by_runner} checked by the runner); claimed twice (attempts > 1): {self.claimed_twice}"
        )


def run_load(
    api: str,
    redis_url: str,
    workdir: Path,
    inputs: list[SumInput],
    users: int,
    duration_s: int,
    job_timeout_s: float = JOB_TIMEOUT_S,
    faults: Faults | None = None,
) -> Figures:
    """Run locust headless against ``api`` for ``duration_s``, then check every accepted job in Redis."""
    write_inputs(inputs, workdir / "inputs.json")
    journal, summary = workdir / "journal.jsonl", workdir / "summary.json"
    # fmt: off
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", api, "--users", str(users), "--spawn-rate", str(max(1, users // 5)),
        "--run-time", f"{duration_s}s", "--stop-timeout", str(int(job_timeout_s + STOP_MARGIN_S)),
        "--exit-code-on-error", "0",  # failures are judged here, from the summary
        "--inputs", str(workdir / "inputs.json"), "--journal", str(journal), "--summary", str(summary),
        "--job-timeout", str(job_timeout_s),
    ]
    # fmt: on
    with open(workdir / "locust.log", "wb") as log, _started(faults):
        # cwd: the repository root is on the path, so the locustfile imports bench.load.jobs.
        locust = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
    if locust.returncode != 0 or not summary.exists():
        raise RuntimeError(f"locust exited with {locust.returncode}; see {workdir / 'locust.log'}")
    stats = json.loads(summary.read_text())
    figures = Figures(stats["routes"], stats["requests"], Counter(stats["counts"]), stats["errors"])
    check_jobs(figures, Journal.read(journal), inputs, redis_url)
    return figures


@contextmanager
def _started(faults: Faults | None) -> Iterator[None]:
    if faults is not None:
        faults.start()
    try:
        yield
    finally:
        if faults is not None:
            faults.stop()


def check_jobs(
    figures: Figures, jobs: dict[str, dict], inputs: list[SumInput], redis_url: str, drain_s: float = DRAIN_S
) -> None:
    """Every accepted token must end final: wait for stragglers up to ``drain_s``, then
    read each record; a final job no user saw end is checked here from its stored output."""
    with Redis.from_url(redis_url, socket_timeout=30) as redis:
        records = final_records(redis, list(jobs), drain_s)
        for token, job in jobs.items():
            figures.accepted[job["kind"]] += 1
            record = records.get(token)
            if record is None or record["status"] not in FINAL:
                figures.lost.append(token)
                continue
            figures.final += 1
            figures.claimed_twice += record.get("attempts", 0) > 1
            outcome = job["outcome"]
            if outcome is None or outcome.startswith("timeout"):
                figures.checked_by_runner += 1
                outcome = _check_stored(redis, token, job, record, inputs)
            if outcome != EXACT:
                figures.wrong[token] = outcome


def final_records(redis: Redis, tokens: list[str], drain_s: float) -> dict[str, dict]:
    """Each token's record (absent: none in Redis), once all are final or after ``drain_s``."""
    records: dict[str, dict] = {}
    pending = tokens
    deadline = time.monotonic() + drain_s
    while pending:
        for token, raw in zip(pending, redis.mget([keys.result(t) for t in pending]), strict=True):
            if raw is not None:
                records[token] = json.loads(raw)
        pending = [t for t in pending if records.get(t, {}).get("status") not in FINAL]
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return records


def _check_stored(redis: Redis, token: str, job: dict, record: dict, inputs: list[SumInput]) -> str:
    if record["status"] != "finished":
        return f"errored: {record.get('error')}"
    output = read_value(redis, keys.output(token))
    if output is None:
        return "finished, but no output is stored"
    answer = None if job["input"] is None else inputs[job["input"]].answer
    return result_problem(job["kind"], output, answer) or EXACT


def load_average() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--faults", action="store_true", help="kill a worker every 20 s and a dispatcher once")
    parser.add_argument("--workdir", type=Path, help="keep the system's data and locust's files here")
    args = parser.parse_args()

    print(load_average(), flush=True)
    print(core_check(), flush=True)
    inputs = make_inputs(SIZES, DATA_DIR)
    with _workdir(args.workdir) as workdir, running_system(workdir / "system") as system:
        faults = Faults(system.process.pid, until_s=args.duration) if args.faults else None
        print(f"{args.users} users for {args.duration} s against {system.api}; faults: {'yes' if faults else 'none'}")
        figures = run_load(system.api, system.redis_url, workdir, inputs, args.users, args.duration, faults=faults)
        discarded = (workdir / "system" / "up.log").read_text(errors="replace").count(DISCARDED)
        workers, dispatchers = len(worker_pids(system.process.pid)), len(dispatcher_pids(system.process.pid))
    figures.print()
    print(f"late results discarded (a final write refused): {discarded}")
    for line in faults.log if faults else []:
        print(f"fault at {line}")
    print(f"after the run: {workers} Dask worker and {dispatchers} dispatcher processes")
    print(load_average())
    problems = figures.problems()
    print("check: OK" if not problems else f"check: FAILED: {'; '.join(problems)}")
    return 1 if problems else 0


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        (path / "system").mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="spacetime-load-") as tmp:
        (Path(tmp) / "system").mkdir()
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
