"""`spacetime up` as a user runs it: the seed's curl flow works, and SIGTERM leaves nothing behind."""

import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from tests.conftest import FIXTURES, free_port
from tests.helpers import wait_until


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("curl") is None, reason="the seed's example uses curl")
def test_up_serves_the_seed_curl_flow_and_stops_cleanly(tmp_path):
    api = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "SPACETIME_DATA_DIR": str(tmp_path / "data"),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{free_port()}",
        "SPACETIME_DASHBOARD_URL": f"http://127.0.0.1:{free_port()}/status",
        "SPACETIME_API_PORT": api.rsplit(":", 1)[1],
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "up"], env=env, stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        banner = _read_banner(up)
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
    psutil.wait_procs(family, timeout=10)
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "stray processes"


def _read_banner(process: subprocess.Popen) -> str:
    """stdout up to the line that ends the start-up banner (the test's timeout bounds it)."""
    lines = []
    while "Ctrl-C" not in (line := process.stdout.readline()):
        assert line, f"spacetime up exited before it was up: {''.join(lines)}"
        lines.append(line)
    return "".join(lines)


def _curl(cwd, *args) -> str:
    return subprocess.run(["curl", "-sS", "--fail-with-body", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout
