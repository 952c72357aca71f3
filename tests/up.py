"""`spacetime up` as a test starts it: every port free, its output in a file, its banner
read, and every process it started checked gone at the end."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from tests.servers import free_port
from tests.waiting import wait_until

# The shutdown grace of every `up` here: short, so that a stop that hangs fails quickly.
GRACE_S = 10.0


@dataclass
class Up:
    """A running `spacetime up`, the environment it was given, and where its log goes."""

    process: subprocess.Popen
    env: dict[str, str]
    log: Path  # its stderr: the supervisor's lines among the rest
    banner: str = ""

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['SPACETIME_API_PORT']}"

    def port(self, setting: str) -> int:
        return urlsplit(self.env[setting]).port or 0

    def child(self, what: str) -> psutil.Process | None:
        """The running child that is ``what``: "redis-server", "api" or "dispatcher"."""
        return next(iter(self.children(what)), None)

    def children(self, what: str) -> list[psutil.Process]:
        """Every running child that is ``what``."""
        found = []
        for process in psutil.Process(self.process.pid).children():
            try:
                if what in (process.name(), process.cmdline()[-1]) and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (psutil.NoSuchProcess, IndexError):
                continue
        return found

    def family(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def up_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """`spacetime up`'s environment with every port free, so tests never collide."""
    return {
        **os.environ,
        "SPACETIME_DATA_DIR": str(tmp_path / "data"),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{free_port()}",
        "SPACETIME_DASHBOARD_URL": f"http://127.0.0.1:{free_port()}/status",
        "SPACETIME_API_PORT": str(free_port()),
        "SPACETIME_SHUTDOWN_GRACE_S": str(GRACE_S),
        **settings,
    }


def start_up(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Up:
    """Start `spacetime up` with its output in a file: a pipe nobody drains would fill up
    with the API's access log and block it."""
    env = env or up_env(tmp_path)
    log = tmp_path / "up.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.run.cli", "up", *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    return Up(process, env, log)


def read_banner(up: Up) -> str:
    """The start-up banner, once `up` has printed it (the test's timeout bounds the wait)."""

    def up_or_gone() -> str:
        text = up.log_text()
        return text if "Ctrl-C stops everything" in text or up.process.poll() is not None else ""

    text = wait_until(up_or_gone, timeout_s=110, what="spacetime up to be up")
    assert "Ctrl-C stops everything" in text, f"spacetime up exited before it was up:\n{text[-3000:]}"
    return text[text.index("SpaceTime Analytics is up") :]


def assert_all_gone(processes: list[psutil.Process]) -> None:
    psutil.wait_procs(processes, timeout=15)
    alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"stray processes: {[p.cmdline() for p in alive]}"
