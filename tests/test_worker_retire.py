"""SIGTERM to ``dask worker --preload-nanny compute.retire`` retires the worker first.

ECS stops a worker task (scale-in, rolling deployment, Spot interruption) with SIGTERM to
the container's main process, the nanny. Real processes here, as in the container: a
scheduler and two ``dask worker`` commands; the signal goes to one worker's main process
only, as ``docker stop`` sends it. The control case shows what plain ``dask worker``
does with the same signal, which is why the preload exists.
"""

import os
import signal
import subprocess
import time

import pytest
from distributed import Client

from tests.compose import VENV_BIN
from tests.processes import Processes
from tests.servers import free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]  # a cluster of worker processes per test


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two workers, ``a`` and ``b``; yields (client, processes, start_worker)."""
    procs = Processes(tmp_path)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    procs.start(
        "scheduler",
        [f"{VENV_BIN}/dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env,
    )

    def start_worker(name: str, *extra: str) -> subprocess.Popen:
        argv = [f"{VENV_BIN}/dask", "worker", address, "--name", name, "--host", "127.0.0.1"]
        return procs.start(name, [*argv, "--nthreads", "1", "--no-dashboard", *extra], env)

    try:
        with Client(address, timeout=30) as client:
            yield client, procs, start_worker
    finally:
        procs.stop_all()


def stop_like_ecs(client: Client, worker: subprocess.Popen, procs: Processes, name: str) -> None:
    """SIGTERM to the worker command's own process, then wait for it and for the scheduler."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{name} did not stop after SIGTERM\n{procs.log_tail(name)}") from None
    wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, what="the scheduler to drop the worker")


def addresses(client: Client) -> dict[str, str]:
    """{worker name: address}."""
    return {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}


def run_scenario(client: Client, procs: Processes, start_worker, *flags: str):
    """Data held only by ``a``, a task running on ``a``; SIGTERM ``a``.

    Returns the value before and after, who holds it now, how many failures the scheduler
    counted against the running task (which must complete either way), and the addresses.
    """
    worker_a = start_worker("a", *flags)
    start_worker("b", *flags)
    client.wait_for_workers(2, timeout=45)
    where = addresses(client)
    # Standard-library functions: the scheduler and workers cannot import this test module.
    # os.urandom gives different bytes on every run: a recomputed key changes its value.
    held = client.submit(os.urandom, 64 * 1024, pure=False, workers=[where["a"]], allow_other_workers=True)
    before = held.result()
    assert set(client.who_has(held)[held.key]) == {where["a"]}
    running = client.submit(time.sleep, 2.0, pure=False, workers=[where["a"]], allow_other_workers=True)
    wait_until(lambda: client.processing(workers=[where["a"]])[where["a"]], what="the task to start on a")

    stop_like_ecs(client, worker_a, procs, "a")

    after = held.result(timeout=30)
    holders = set(client.who_has(held)[held.key])
    running.result(timeout=30)  # raises if the job could not complete
    failures = client.run_on_scheduler(lambda dask_scheduler, key=running.key: dask_scheduler.tasks[key].suspicious)
    return before, after, holders, failures, where


def test_sigterm_retires_the_worker_first(cluster):
    client, procs, start_worker = cluster
    before, after, holders, failures, where = run_scenario(
        client, procs, start_worker, "--preload-nanny", "compute.retire"
    )
    assert after == before, "the data was recomputed, not moved"
    assert holders == {where["b"]}
    assert failures == 0, "the departure counted as a failure of the running task"
    assert "Retire worker addresses" in procs.log_tail("scheduler", 20000)
    assert "SIGTERM: retiring" in procs.log_tail("a", 20000)


def test_without_the_preload_sigterm_loses_the_data(cluster):
    """The control: plain ``dask worker`` closes at once; its data is recomputed elsewhere."""
    client, procs, start_worker = cluster
    before, after, holders, failures, where = run_scenario(client, procs, start_worker)
    assert after != before, "plain dask worker moved the data: is the preload still needed?"
    assert holders == {where["b"]}
    assert failures == 1
