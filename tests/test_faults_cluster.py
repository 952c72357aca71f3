"""Faults of the Dask side, on the split topology of compose and AWS: `dask scheduler`,
`dask worker` and `spacetime dispatcher` as separate processes. Every job ends exact or
`errored` with a reason, never stuck in `received`."""

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from distributed import Client, LocalCluster

from backend.core.job import Job, Lane
from backend.core.kinds import EVEN_SUM, KINDS, RANDOMIZE, Body, JobKind
from backend.dispatch.dispatcher import Dispatcher
from backend.dispatch.runners import JobContext, Outcome
from backend.jobs.store import JobStore, Submission
from tests.compose import VENV_BIN
from tests.processes import Processes
from tests.servers import free_port
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
NUMBERS = b"\n".join(b"%d" % i for i in range(1_000_000))  # 6.9 MB
EXPECTED = sum(range(0, 1_000_000, 2))


class Split:
    """A scheduler, workers and dispatchers as processes, restartable one by one."""

    def __init__(self, processes: Processes, redis_url: str, data_dir: Path):
        self.processes = processes
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),  # workers unpickle task functions of tests/
            "REDIS_URL": redis_url,
            "DASK_SCHEDULER_ADDRESS": self.address,
            "SPACETIME_DATA_DIR": str(data_dir),
            "SPACETIME_LEASE_S": "2",
            "SPACETIME_EVEN_SUM_BLOCK_BYTES": str(64 * 1024),
            # The Dask client gives up reconnecting after this; then each attempt fails fast.
            "SPACETIME_DASK_TIMEOUT_S": "10",
            # A task that kills its worker is retried on one other worker, then given up.
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
        }
        self.workers = 0

    def scheduler(self) -> None:
        argv = [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port)]
        self.processes.start("scheduler", [*argv, "--dashboard-address", ":0"], self.env)

    def worker(self) -> None:
        self.workers += 1
        argv = [str(VENV_BIN / "dask"), "worker", self.address, "--nthreads", "1", "--host", "127.0.0.1"]
        argv += ["--dashboard-address", ":0", "--preload", "compute.preload"]
        self.processes.start(f"worker-{self.workers}", argv, self.env)

    def dispatcher(self, **env: str) -> None:
        argv = [sys.executable, "-m", "backend.run.cli", "dispatcher"]
        self.processes.start("dispatcher", argv, {**self.env, **env})

    def kill(self, name: str) -> None:
        process = dict(self.processes.started)[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def running_job(self, store: JobStore, tmp_path: Path, workers: int = 1, **dispatcher_env: str) -> str:
        """Start a scheduler, ``workers`` workers and a dispatcher; submit the numbers job and
        return its token once some of its blocks are done."""
        self.scheduler()
        for _ in range(workers):
            self.worker()
        self.wait_workers(workers)
        self.dispatcher(**dispatcher_env)
        token = numbers_job(store, tmp_path)
        wait_until(lambda: running(store, token), timeout_s=60, what="the job to run")
        return token

    def wait_workers(self, n: int) -> None:
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=60)


@pytest.fixture
def split(tmp_path, redis_url, redis) -> Iterator[Split]:
    processes = Processes(tmp_path)
    try:
        yield Split(processes, redis_url, tmp_path)
    finally:
        processes.stop_all()


def numbers_job(store: JobStore, tmp_path: Path) -> str:
    path = tmp_path / "numbers.txt"
    path.write_bytes(NUMBERS)
    job = Submission(EVEN_SUM, cost=1, bytes=len(NUMBERS), input_url=path.as_uri())
    return store.submit(job).token


def running(store: JobStore, token: str) -> bool:
    job = store.get(token)
    return job.status == "received" and job.progress is not None and job.progress.done > 0


def ended(store: JobStore, token: str) -> Job:
    return wait_until(lambda: (j := store.get(token)).status in ("finished", "errored") and j, timeout_s=120)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_scheduler_killed_mid_job_and_restarted_the_job_ends_exact(split, settings, redis, tmp_path):
    store = JobStore(redis, settings.result_ttl_s)
    token = split.running_job(store, tmp_path)
    split.kill("scheduler")  # its workers leave with it: a new scheduler, new workers (compose restarts them)
    split.scheduler()
    split.worker()
    job = ended(store, token)
    assert job.status == "finished", (job.error, split.processes.all_logs())
    assert json.loads(store.output(token))["sum"] == EXPECTED
    # At least one attempt lost with the scheduler (one more if the next began before it was back).
    assert job.attempts >= 2 and "scheduler" in job.last_error


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_scheduler_gone_for_good_the_job_errors_with_the_reason(split, settings, redis, tmp_path):
    store = JobStore(redis, settings.result_ttl_s)
    token = split.running_job(store, tmp_path, SPACETIME_DASK_TIMEOUT_S="2")
    split.kill("scheduler")
    job = ended(store, token)
    assert job.status == "errored"
    assert job.error.startswith(f"gave up after {settings.max_attempts} attempts:") and "scheduler" in job.error


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_worker_killed_mid_job_the_sum_is_exact(split, settings, redis, tmp_path):
    store = JobStore(redis, settings.result_ttl_s)
    token = split.running_job(store, tmp_path, workers=2)
    nanny = psutil.Process(dict(split.processes.started)["worker-1"].pid)
    for worker in nanny.children(recursive=True):  # the worker process under its nanny
        worker.kill()
    job = ended(store, token)
    assert job.status == "finished", job.error
    assert json.loads(store.output(token))["sum"] == EXPECTED


def kill_this_worker(_: int) -> None:
    """The poison: a task that takes its worker process down, every time."""
    os._exit(3)


def run_poison(ctx: JobContext, job: Job) -> Outcome:
    future = ctx.cluster.client.submit(kill_this_worker, 0, key=f"{job.kind}-{job.token}-0")
    return Outcome(ctx.cluster.result(future))


POISON = JobKind(
    name="poison",
    lane=Lane.interactive,
    input=Body("application/octet-stream", "max_image_bytes"),
    runner="tests.test_faults_cluster:run_poison",
    summary="Kill the worker that runs it",
    result_media_type="application/octet-stream",
    result_description="Nothing: it never finishes",
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_task_that_kills_its_worker_every_time_ends_errored(split, settings, redis, monkeypatch):
    split.scheduler()
    split.worker()
    split.worker()
    split.wait_workers(2)
    monkeypatch.setitem(KINDS, POISON.name, POISON)
    store = JobStore(redis, settings.result_ttl_s)
    with Client(split.address, timeout=30) as client:
        dispatcher = Dispatcher(settings.model_copy(update={"dask_scheduler_address": split.address}), client)
        dispatcher.start()
        try:
            token = store.submit(Submission(POISON)).token
            job = ended(store, token)
        finally:
            dispatcher.stop()
    assert job.status == "errored" and "KilledWorker" in job.error
    split.wait_workers(2)  # the nannies brought both workers back


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_no_worker_left_the_job_goes_back_then_gives_up(make_settings, redis, dask_client):
    with (
        LocalCluster(
            n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=":0"
        ) as empty,
        Client(empty) as client,
    ):
        settings = make_settings(dask_scheduler_address=empty.scheduler_address, no_workers_grace_s=1, max_attempts=2)
        dispatcher = Dispatcher(settings, client)
        dispatcher.start()
        try:
            store = JobStore(redis, settings.result_ttl_s)
            token = store.submit(Submission(RANDOMIZE, input_bytes=b"\x89PNG")).token
            job = wait_until(lambda: (j := store.get(token)).status == "errored" and j, timeout_s=40)
        finally:
            dispatcher.stop()
    assert job.error == "gave up after 2 attempts: no Dask worker has been connected for 1 s"
    assert time.time() - job.requested_at < 40
