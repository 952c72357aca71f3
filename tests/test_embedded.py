"""`spacetime up` as a user runs it: the seed's curl flow, every child supervised, nothing
left behind however it ends.

One `up` (the ``system`` fixture) serves every check that leaves it running: the curl
flow, loopback-only sockets, and a redis-server, an API and a Dask worker SIGKILLed and
brought back. Its teardown is a check too: SIGTERM stops it cleanly within the shutdown
grace and no process outlives it. The endings that need an `up` of their own (SIGKILLed,
SIGTERMed during start-up, giving up on a crash loop) get a small one each.
"""

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from distributed import Client
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from backend.core.job import Job
from backend.dispatch.runners import image_task_key
from backend.jobs import keys
from backend.run.supervisor import STOP_MARGIN_S
from tests.paths import FIXTURES
from tests.servers import free_port
from tests.up import GRACE_S, Up, assert_all_gone, read_banner, start_up, up_env
from tests.waiting import FINAL, wait_status, wait_until

# `up` is gone this long after a SIGTERM at the latest, whatever it was doing.
STOP_BOUND_S = GRACE_S + STOP_MARGIN_S
LOOPBACK = ("127.0.0.1", "::1")

# Each test runs one or more whole `spacetime up`s: seconds each.
pytestmark = pytest.mark.slow


# -- endings that need an `up` of their own (first: the shared one is not running yet) --------


@pytest.mark.timeout(120)
def test_up_killed_outright_leaves_no_process(tmp_path):
    up = start_up(tmp_path)
    read_banner(up)
    family = up.family()
    up.process.kill()
    up.process.wait()
    assert_all_gone(family)


@pytest.mark.timeout(120)
def test_sigterm_during_start_up_stops_up(tmp_path):
    """While `up` waits for an API that cannot start (its port is taken), SIGTERM still stops it."""
    with up_whose_api_cannot_start(tmp_path, max_crashes=100) as up:
        wait_until(lambda: "api (pid" in up.log_text(), timeout_s=90, what="the API's first crash")
        family = up.family()
        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(STOP_BOUND_S) == 0, up.log_text()[-3000:]
    assert "SpaceTime Analytics is up" not in up.log_text()
    assert_all_gone(family)


@pytest.mark.timeout(120)
def test_a_child_that_keeps_crashing_makes_up_give_up(tmp_path):
    with up_whose_api_cannot_start(tmp_path, max_crashes=2) as up:
        # Two starts and a backoff, then a stop within the bound.
        assert up.process.wait(90) == 1
    log = up.log_text()
    gave_up = r"api crashed 2 times within 60 s \(last: exited with code \d+\); giving up; stopped everything"
    assert re.search(gave_up, log), log[-3000:]
    assert log.count("restarted api as pid") == 1


def test_up_refuses_a_taken_redis_port(tmp_path, redis_url):
    """With the port taken, `up` must stop, not quietly use somebody else's Redis."""
    env = {**os.environ, "SPACETIME_DATA_DIR": str(tmp_path), "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "backend.run.cli", "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "already in use" in done.stderr


# -- one `up`, kept running across these checks ---------------------------------------------


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """One `up` for the checks that leave it running; stopping it is checked at the end."""
    tmp_path = tmp_path_factory.mktemp("up")
    up = start_up(tmp_path)
    try:
        up.banner = read_banner(up)
        yield up
        family = up.family()
        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(STOP_BOUND_S) == 0, up.log_text()[-3000:]
        assert_all_gone(family)
    finally:
        up.process.kill()
        up.process.wait()


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("curl") is None, reason="the seed's example uses curl")
def test_up_serves_the_seed_curl_flow(system, tmp_path):
    assert f"{system.api}/docs" in system.banner and system.env["SPACETIME_DASHBOARD_URL"] in system.banner
    seed_curl_flow(system.api, tmp_path)
    # redis-server, 2 workers (+ a multiprocessing helper), 2 dispatchers, the API.
    assert len(system.family()) >= 6


@pytest.mark.timeout(60)
def test_up_listens_on_loopback_only(system):
    """Redis, the scheduler, its dashboard, the workers, the nannies and the API."""
    listening: dict[int, str] = {}  # {port: address}
    for process in [psutil.Process(system.process.pid), *system.family()]:
        for conn in process.net_connections("inet"):
            if conn.status == psutil.CONN_LISTEN:
                listening[conn.laddr.port] = conn.laddr.ip
    ours = {system.port(s) for s in ("REDIS_URL", "DASK_SCHEDULER_ADDRESS", "SPACETIME_DASHBOARD_URL")}
    assert ours | {int(system.env["SPACETIME_API_PORT"])} <= set(listening), listening
    assert all(address in LOOPBACK for address in listening.values()), listening


@pytest.mark.timeout(180)
def test_redis_server_killed_comes_back_on_its_port_with_its_data(system, cat_png):
    """SIGKILL redis-server with a job finished and a job queued: the supervisor restarts it
    on the same port, its AOF brings both back, /healthz recovers by itself, all jobs end.

    The queued job is held in the queue by pausing the dispatchers (SIGSTOP) until none is
    blocked in a claim: a job a dispatcher is running when Redis dies is the dispatcher's
    own failure path, not this test's subject.
    """
    api, port = system.api, system.port("REDIS_URL")
    before = restarts(api, "redis-server")
    done = submit(api, cat_png)
    assert wait_status(api, "randomize", done, timeout_s=60)[-1] == {"status": "finished"}
    killed = system.child("redis-server")
    assert killed is not None
    dispatchers = system.children("dispatcher")
    try:
        for dispatcher in dispatchers:
            dispatcher.suspend()
        with Redis.from_url(system.env["REDIS_URL"]) as redis:
            wait_until(lambda: not any("b" in c["flags"] for c in redis.client_list()), what="no claim waiting")
        queued = submit(api, cat_png)
        assert status(api, queued) == "requested"
        killed.kill()
        reborn = wait_until(lambda: redis_listening(system, port, other_than=killed.pid), what="redis-server back")
    finally:
        for dispatcher in dispatchers:
            dispatcher.resume()
    wait_until(lambda: responds(f"{api}/healthz"), what="/healthz back to 200")
    after = submit(api, cat_png)

    figures = tally(api, [done, queued, after])
    print(f"redis-server {killed.pid} -> {reborn.pid}: {json.dumps(figures)}")
    assert figures["final"] == figures["jobs"] == 3 and figures["lost"] == 0
    assert all(status(api, t) == "finished" for t in (done, queued, after))
    assert httpx.get(f"{api}/randomize/{done}/result").content.startswith(b"\x89PNG")
    wait_until(lambda: restarts(api, "redis-server") == before + 1, what="the restart counted")
    assert f"redis-server (pid {killed.pid}) was killed by SIGKILL" in system.log_text()


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("curl") is None, reason="the seed's example uses curl")
def test_api_killed_is_restarted(system, tmp_path):
    api = system.api
    before = restarts(api, "api")
    killed = system.child("api")
    assert killed is not None
    killed.kill()
    wait_until(lambda: (c := system.child("api")) is not None and c.pid != killed.pid, what="a new API")
    wait_until(lambda: responds(f"{api}/healthz"), what="the new API to answer")
    seed_curl_flow(api, tmp_path)
    wait_until(lambda: restarts(api, "api") == before + 1, what="the restart counted")
    assert f"api (pid {killed.pid}) was killed by SIGKILL" in system.log_text()


@pytest.mark.timeout(120)
def test_dask_worker_killed_is_restarted_by_its_nanny(system, cat_png):
    """Not the supervisor's job: LocalCluster's nannies restart their workers."""
    with Client(system.env["DASK_SCHEDULER_ADDRESS"], timeout=30) as client:
        pids = worker_pids(client)
        victim = min(pids)
        psutil.Process(victim).kill()
        wait_until(
            lambda: len(now := worker_pids(client)) == len(pids) and victim not in now,
            timeout_s=60,
            what="the nanny to restart its worker",
        )
    token = submit(system.api, cat_png)
    assert wait_status(system.api, "randomize", token, timeout_s=60)[-1] == {"status": "finished"}


@pytest.mark.timeout(120)
def test_images_and_blocks_run_in_their_own_pools(system, cat_png, tmp_path):
    """Image tasks on the interactive worker, block tasks on the bulk workers, which run
    at a lower CPU priority, so that a busy cluster still gives an image a core at once;
    an image of over SPACETIME_LARGE_IMAGE_PIXELS (4 MP) on the bulk workers too, so that
    one client's large images never take the cores from another's small ones."""
    numbers = Path(system.env["SPACETIME_DATA_DIR"]) / "uploads" / "pools.txt"
    numbers.parent.mkdir(parents=True, exist_ok=True)
    numbers.write_bytes(b"2 " * 200_000)
    image = submit(system.api, cat_png)
    large = submit(system.api, gradient_png(2100, 2000))  # 4.2 MP, in a few KB
    total = httpx.post(f"{system.api}/even-sum", json={"url": numbers.as_uri()}).json()["token"]
    for kind, token in (("randomize", image), ("randomize", large), ("even-sum", total)):
        assert wait_status(system.api, kind, token, timeout_s=60)[-1] == {"status": "finished"}
    with Client(system.env["DASK_SCHEDULER_ADDRESS"], timeout=30) as client:
        workers = client.scheduler_info()["workers"]
        pool = {address: next(iter(info["resources"])) for address, info in workers.items()}
        # each worker's threads' nice values, each once (a lambda: the workers cannot import tests)
        niceness = client.run(lambda: {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")})
        ran = {str(task["key"]): task["worker"] for task in client.get_task_stream(start=0)}
    assert sorted(pool.values()) == ["bulk", "bulk", "interactive", "interactive"]
    assert all(niceness[a] == {10} for a, p in pool.items() if p == "bulk"), niceness  # every thread
    assert all(niceness[a] == {0} for a, p in pool.items() if p == "interactive"), niceness
    with Redis.from_url(system.env["REDIS_URL"]) as redis:  # the dispatcher is in the record, not shown to clients
        records = {token: Job.model_validate_json(redis.get(keys.result(token))) for token in (image, large)}
    task = {token: image_task_key(job) for token, job in records.items()}
    assert pool[ran[task[image]]] == "interactive" and pool[ran[task[large]]] == "bulk"
    blocks = [worker for key, worker in ran.items() if key.startswith(f"even-sum-{total}-") and "reduce" not in key]
    assert blocks and {pool[worker] for worker in blocks} == {"bulk"}


# -- helpers ----------------------------------------------------------------------------------


def gradient_png(width: int, height: int) -> bytes:
    """A grey gradient: many pixels, few bytes."""
    pixels = np.add.outer(np.arange(height), np.arange(width)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def seed_curl_flow(api: str, cwd: Path) -> None:
    """The original README's three curl commands, as a user types them."""
    shutil.copy(FIXTURES / "cat.png", cwd / "cat.png")
    token = _curl(cwd, "-H", "Content-Type: image/png", "--data-binary", "@cat.png", f"{api}/randomize")
    token = token.split('"token":"')[1].split('"')[0]
    wait_until(lambda: '"finished"' in _curl(cwd, f"{api}/randomize/{token}/status"), what="the job")
    _curl(cwd, "-o", "out.png", f"{api}/randomize/{token}/result")
    assert (cwd / "out.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _curl(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def submit(api: str, png: bytes) -> str:
    created = httpx.post(f"{api}/randomize", content=png, headers={"Content-Type": "image/png"})
    assert created.status_code == 201, created.text
    return created.json()["token"]


def status(api: str, token: str) -> str:
    return httpx.get(f"{api}/randomize/{token}/status").json()["status"]


def tally(api: str, tokens: list[str], timeout_s: float = 60.0) -> dict[str, int]:
    """The figures of docs/reliability.md: jobs, final, lost (never final), duplicated (run twice)."""
    final = [t for t in tokens if wait_status(api, "randomize", t, timeout_s)[-1]["status"] in FINAL]
    attempts = [httpx.get(f"{api}/tasks/{t}").json().get("attempts", 1) for t in final]
    return {
        "jobs": len(tokens),
        "final": len(final),
        "lost": len(tokens) - len(final),
        "duplicated": sum(a > 1 for a in attempts),
    }


def restarts(api: str, child: str) -> float:
    """``spacetime_child_restarts_total{child=...}`` from GET /metrics (0 before the first)."""
    for family in text_string_to_metric_families(httpx.get(f"{api}/metrics").text):
        for sample in family.samples:
            if sample.name == "spacetime_child_restarts_total" and sample.labels == {"child": child}:
                return sample.value
    return 0.0


def responds(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def redis_listening(up: Up, port: int, other_than: int) -> psutil.Process | None:
    """A new redis-server child of ``up`` listening on ``port``, once there is one."""
    process = up.child("redis-server")
    if process is None or process.pid == other_than:
        return None
    listens = any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in process.net_connections("inet"))
    return process if listens else None


def worker_pids(client: Client) -> set[int]:
    return set(client.run(os.getpid, on_error="ignore").values())


@contextmanager
def up_whose_api_cannot_start(tmp_path: Path, max_crashes: int):
    """A small `up` whose API port is taken (bound, not listening): the API exits at each
    start, and `up` waits for it, still starting up, until it gives up."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        api_port, crashes = str(taken.getsockname()[1]), str(max_crashes)
        env = up_env(tmp_path, SPACETIME_API_PORT=api_port, SPACETIME_RESTART_MAX_CRASHES=crashes)
        up = start_up(tmp_path, "--workers", "1", "--dispatchers", "1", env=env)
        try:
            yield up
        finally:
            up.process.kill()
            up.process.wait()
