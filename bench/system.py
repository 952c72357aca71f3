"""A whole system for a benchmark: `spacetime up` on free loopback ports, and a check of
what this machine's cores give today (print it beside every result).

    with running_system(tmp, auth="keys", allowed=[data_dir]) as system:
        system.api, system.redis_url, system.scheduler
"""

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port

REPO = Path(__file__).parents[1]
START_TIMEOUT_S = 120


@dataclass
class System:
    api: str
    redis_url: str
    scheduler: str
    data_dir: Path
    process: subprocess.Popen | None = None  # `spacetime up` itself

    def spacetime(self, *args: str) -> str:
        """Run a `spacetime` command against this system; its stdout."""
        return self.run_spacetime(*args, check=True).stdout

    def run_spacetime(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """Run a `spacetime` command against this system; its output and exit code (a
        benchmark reports a failing `spacetime doctor`, it does not stop at it)."""
        env = {**os.environ, "REDIS_URL": self.redis_url, "DASK_SCHEDULER_ADDRESS": self.scheduler}
        command = [sys.executable, "-m", "backend.run.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=check, cwd=REPO)


@contextmanager
def running_system(data_dir: Path, auth: str = "open", allowed: list[Path] = (), **env: str) -> Iterator[System]:
    """`spacetime up` with its own ports and data folder; stopped (SIGTERM) on exit."""
    api_port = free_port()
    system = System(
        api=f"http://127.0.0.1:{api_port}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        scheduler=f"tcp://127.0.0.1:{free_port()}",
        data_dir=data_dir,
    )
    uploads = (data_dir / "uploads").as_uri()
    environment = {
        **os.environ,
        "SPACETIME_DATA_DIR": str(data_dir),
        "REDIS_URL": system.redis_url,
        "DASK_SCHEDULER_ADDRESS": system.scheduler,
        "SPACETIME_DASHBOARD_URL": f"http://127.0.0.1:{free_port()}/status",
        "SPACETIME_API_PORT": str(api_port),
        "SPACETIME_AUTH": auth,
        "SPACETIME_ALLOWED_URL_PREFIXES": str([uploads, *(p.resolve().as_uri() for p in allowed)]).replace("'", '"'),
        **env,
    }
    log = open(data_dir / "up.log", "wb")  # noqa: SIM115  # closed below, after the process
    up = subprocess.Popen(
        [sys.executable, "-m", "backend.run.cli", "up"], env=environment, stdout=log, stderr=log, cwd=REPO
    )
    system.process = up
    try:
        _wait_healthy(system.api, up)
        yield system
    finally:
        up.terminate()
        up.wait(120)
        log.close()


def _wait_healthy(api: str, up: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"spacetime up exited with {up.returncode}; see up.log")
        try:
            if httpx.get(f"{api}/healthz", timeout=2).json().get("status") == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("spacetime up did not become healthy")


def _spin(n: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return time.perf_counter() - start


# A pulsing loop's period: a few scheduler ticks, so that it sleeps and wakes often.
PULSE_PERIOD_S = 0.02


def _burn(share: float) -> None:
    """Spin ``share`` of every PULSE_PERIOD_S and sleep the rest (1: spin for ever)."""
    while True:
        end = time.perf_counter() + share * PULSE_PERIOD_S
        while time.perf_counter() < end:
            pass
        if share < 1:
            time.sleep((1 - share) * PULSE_PERIOD_S)


@contextmanager
def one_core_taken(loops: int = 1) -> Iterator[None]:
    """Plain Python loops in processes of their own (nothing of our system) take one core
    between them while the block runs: one loop spinning steadily, or ``loops`` loops each
    spinning 1/``loops`` of every PULSE_PERIOD_S. The same average, shaped differently: a
    loop that wakes often is let on a core ahead of a task that has been running, so the
    pulses cost a neighbour more than the steady loop does (docs/benchmarks.md)."""
    context = multiprocessing.get_context("spawn")
    burners = [context.Process(target=_burn, args=(1 / loops,), daemon=True) for _ in range(loops)]
    for burner in burners:
        burner.start()
    time.sleep(1.5)  # started and spinning (a spawned interpreter takes a moment)
    try:
        yield
    finally:
        for burner in burners:
            burner.terminate()
            burner.join(10)


def core_check(loops: int = 20_000_000) -> str:
    """What the cores give now: a pure-Python loop alone, then one per core at once. On a
    shared VM this moves from day to day; a result is read against it."""
    alone = _spin(loops)
    cores = os.cpu_count() or 1
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        together = max(pool.map(_spin, [loops] * cores))
    return (
        f"cores: a Python loop takes {alone:.2f} s alone and {together:.2f} s with {cores} at once: "
        f"the {cores} cores give {cores * alone / together:.2f}x one"
    )
