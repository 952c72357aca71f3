"""`spacetime up` as a user runs it: the seed's curl flow works, and SIGTERM leaves nothing behind."""

import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from tests.helpers import FIXTURES, free_port, wait_until


def up_env(tmp_path) -> dict:
    """`spacetime up`'s environment with every port free, so tests never collide."""
    return {
        **os.environ,
        "SPACETIME_DATA_DIR": str(tmp_path / "data"),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{free_port()}",
        "SPACETIME_DASHBOARD_URL": f"http://127.0.0.1:{free_port()}/status",
        "SPACETIME_API_PORT": str(free_port()),
    }


def start_up(env: dict, cwd) -> tuple[subprocess.Popen, str]:
    """Start `spacetime up`; return it and its banner once it says it is up."""
    up = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "up"], env=env, stdout=subprocess.PIPE, text=True, cwd=cwd
    )
    return up, _read_banner(up)


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("curl") is None, reason="the seed's example uses curl")
def test_up_serves_the_seed_curl_flow_and_stops_cleanly(tmp_path):
    env = up_env(tmp_path)
    api = f"http://127.0.0.1:{env['SPACETIME_API_PORT']}"
    up, banner = start_up(env, tmp_path)
    try:
        assert f"{api}/docs" in banner and env["SPACETIME_DASHBOARD_URL"] in banner

        shutil.copy(FIXTURES / "cat.png", tmp_path / "cat.png")
        token = _curl(tmp_path, "-H", "Content-Type: image/png", "--data-binary", "@cat.png", f"{api}/randomize")
        token = token.split('"token":"')[1].split('"')[0]
        wait_until(lambda: '"finished"' in _curl(tmp_path, f"{api}/randomize/{token}/status"), what="the job")
        _curl(tmp_path, "-o", "out.png", f"{api}/randomize/{token}/result")
        assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

        family = psutil.Process(up.pid).children(recursive=True)
        assert len(family) >= 6  # redis-server, 2 workers (+ nanny helpers), 2 dispatchers, api
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    assert code == 0
    assert_all_gone(family)


@pytest.mark.timeout(180)
def test_up_killed_outright_leaves_no_process(tmp_path):
    up, _ = start_up(up_env(tmp_path), tmp_path)
    family = psutil.Process(up.pid).children(recursive=True)
    up.kill()
    up.wait()
    assert_all_gone(family)


def assert_all_gone(processes: list[psutil.Process]) -> None:
    psutil.wait_procs(processes, timeout=15)
    alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"stray processes: {[p.cmdline() for p in alive]}"


def _read_banner(process: subprocess.Popen) -> str:
    """stdout up to the line that ends the start-up banner (the test's timeout bounds it)."""
    lines = []
    while "Ctrl-C" not in (line := process.stdout.readline()):
        assert line, f"spacetime up exited before it was up: {''.join(lines)}"
        lines.append(line)
    return "".join(lines)


def _curl(cwd, *args) -> str:
    return subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def test_up_refuses_a_taken_redis_port(tmp_path, redis_url):
    """With the port taken, `up` must stop, not quietly use somebody else's Redis."""
    env = {**os.environ, "SPACETIME_DATA_DIR": str(tmp_path), "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "already in use" in done.stderr
