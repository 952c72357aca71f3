"""Running services as local processes, as a compose service's ``command`` with its
``environment``: started, signalled and stopped as process groups."""

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Processes:
    """Started process groups; ``stop_all`` ends each group, children included."""

    log_dir: Path
    started: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        # A session of its own: the dask nanny's worker and uvicorn's children go with it.
        with open(self.log_dir / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                argv, env=env, cwd=self.log_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append((name, process))
        return process

    def wait_healthy(self, name: str, check: list[str], env: dict[str, str], timeout_s: float) -> None:
        """Run a healthcheck command until it passes, failing fast if the service died."""
        process = dict(self.started)[name]
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}\n{self.log_tail(name)}")
            result = subprocess.run(check, env=env, capture_output=True, timeout=10)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} not healthy after {timeout_s}s: {check}\n"
                    f"{result.stderr.decode()[-2000:]}\n{self.log_tail(name)}"
                )
            time.sleep(0.25)

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return f"--- {name} log ---\n" + (path.read_text(errors="replace")[-chars:] if path.exists() else "")

    def all_logs(self) -> str:
        return "\n".join(self.log_tail(name) for name, _ in self.started)

    def stop_all(self) -> None:
        """Stop each process in the reverse of its start, each gone before the next is
        signalled: what started later needs what started before on its way out (a worker
        retiring hands its data over through the scheduler, a dispatcher hands its jobs
        back to Redis). Signalled all at once, a worker could outlive its 15 s on a loaded
        machine (the compose test's bulk worker, in 1 of 2 runs beside 3 busy loops)."""
        for _, process in reversed(self.started):
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
            # Children left behind after the leader exited (a nanny's worker) go too.
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
