"""The dispatcher: takes jobs from Redis and runs them on the Dask cluster.

It runs ``concurrency`` jobs at once (one thread each: the threads mostly wait on
Redis or on Dask futures, so the GIL is not the limit), renews its lease and reaps
the jobs of dead dispatchers from a heartbeat thread, and on SIGTERM stops claiming,
lets running jobs end, and hands back what it still holds.
"""

import itertools
import logging
import threading
import time
from contextlib import contextmanager

from distributed import Client
from redis import Redis

from backend import keys
from backend.exceptions import UnknownTaskKind
from backend.job import Job, JobStatus, Kind
from backend.metrics import (
    Stopwatch,
    Timing,
    count_job,
    make_timing,
    report_store_url,
    save_timing,
)
from backend.queue import JobQueue, new_dispatcher_id
from backend.runners import RUNNERS, JobContext, key_prefix
from backend.settings import Settings
from backend.store import JobStore
from backend.waiting import wait_for
from compute.errors import InvalidInput
from compute.report import JobReport, task_compute_s

log = logging.getLogger(__name__)

# Errors whose message is for the user as it is; anything else is reported with its type.
USER_ERRORS = (InvalidInput, FileNotFoundError, IsADirectoryError, PermissionError, UnknownTaskKind)


class Dispatcher:
    def __init__(self, settings: Settings, client: Client, redis: Redis | None = None):
        self.settings = settings
        self.redis = redis or Redis.from_url(settings.redis_url)
        self.store = JobStore(self.redis, settings.result_ttl_s)
        self.queue = JobQueue(self.redis, new_dispatcher_id(), settings.lease_s)
        self.context = JobContext(client=client, store=self.store, settings=settings)
        self._image_jobs = itertools.count()
        self.stopping = threading.Event()  # no new claims
        self._released = threading.Event()  # job loops are done: stop renewing the lease
        self._heartbeat: threading.Thread | None = None
        self._job_threads: list[threading.Thread] = []

    @property
    def id(self) -> str:
        return self.queue.id

    def start(self) -> None:
        """Start the heartbeat and ``concurrency`` job loops, each in its own thread."""
        self.queue.heartbeat()
        self.context.client.get_task_stream(start=0, stop=0)  # start the scheduler's recording
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._job_threads = [
            threading.Thread(target=self._job_loop, name=f"job-{i}", daemon=True)
            for i in range(self.settings.dispatcher_concurrency)
        ]
        for thread in (self._heartbeat, *self._job_threads):
            thread.start()
        log.info("dispatcher %s started with %d job loops", self.id, self.settings.dispatcher_concurrency)

    def stop(self) -> None:
        """Stop claiming, give running jobs ``shutdown_grace_s`` to end, hand back the rest."""
        self.stopping.set()
        # Idle loops leave within one claim timeout, busy ones get the grace period. After
        # the deadline no loop is inside BLMOVE, so none can take a token after the release.
        deadline = time.monotonic() + max(self.settings.shutdown_grace_s, keys.CLAIM_TIMEOUT_S + 1)
        for thread in self._job_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # The lease was renewed until now, so nobody reaped jobs we were still finishing;
        # the heartbeat stops before the release so it cannot re-register us after it.
        self._released.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        requeued = self.queue.release()
        log.info("dispatcher %s stopped; requeued %d job(s)", self.id, requeued)

    def _heartbeat_loop(self) -> None:
        period = self.settings.lease_s / keys.LEASE_RENEWALS_PER_PERIOD
        while not self._released.wait(period):
            try:
                self.queue.heartbeat()
                if reaped := self.queue.reap():
                    log.warning("requeued %d job(s) of dead dispatchers", reaped)
            except Exception:  # a Redis hiccup must not kill the heartbeat for good
                log.exception("heartbeat failed")

    def _job_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                token = self.queue.claim()
                if token is not None:
                    self.handle(token)
            except Exception:
                # Redis went away: the claimed token (if any) sits in our processing
                # list and is requeued by a reaper once our lease lapses.
                log.exception("job loop error; retrying")
                self.stopping.wait(1.0)

    def handle(self, token: str) -> None:
        """Run one claimed job to a final state, then record its timings."""
        job = self.store.mark_received(token, self.id)
        if job is None:
            return
        if job.status is JobStatus.errored:  # the record was unreadable
            self.store.fail(token, self.id, job.error or "job record is not readable")
            return
        with self._report(job) as report_url:
            timing = self._execute(job, report_url)
        if timing is None:
            return
        save_timing(self.settings, timing)
        count_job(self.redis, timing)

    def _execute(self, job: Job, report_url: str | None) -> Timing | None:
        """Run the job, store its final state; the user sees it finished on return.

        None when the job failed because we shut down and handed it back: another
        dispatcher runs it, so recording an error here would be wrong.
        """
        error, outcome = None, None
        started = time.time()
        with Stopwatch() as watch:
            try:
                outcome = self._run(job)
            except USER_ERRORS as exc:
                error = str(exc)
            except Exception as exc:
                if self._released.is_set():
                    log.info("job %s was handed back at shutdown", job.token)
                    return None
                log.exception("job %s failed", job.token)
                error = f"{type(exc).__name__}: {exc}"
        timing = make_timing(
            job,
            "errored" if error else "finished",
            watch.seconds,
            task_compute_s=task_compute_s(self.context.client, key_prefix(job), since=started),
            error=error,
            report_url=report_url,
            timing_url=report_store_url(self.settings, job.token, "json"),
            **(outcome.fields if outcome else {}),
        )
        if error or outcome is None:
            self.store.fail(job.token, self.id, error or "no result", **timing.record_fields())
        else:
            self.store.finish(job.token, self.id, outcome.output, **timing.record_fields())
        return timing

    @contextmanager
    def _report(self, job: Job):
        """A performance report for even-sum jobs and for 1 in N image jobs.

        Written after the job is marked finished, so building it (a scheduler round
        trip and some bokeh work) never adds to the user's lead time.
        """
        every = self.settings.image_report_every
        if job.kind == Kind.even_sum:
            sampled = True
        else:  # image jobs are sampled; a job of unknown kind runs nothing worth a report
            sampled = job.kind == Kind.randomize and every > 0 and next(self._image_jobs) % every == 0
        if not sampled:
            yield None
            return
        url = report_store_url(self.settings, job.token, "html")
        description = f"{job.kind} job {job.token}: tasks {key_prefix(job)}-*"
        with JobReport(url, description, self.settings.storage_options(url)):
            yield url

    def _run(self, job: Job):
        runner = RUNNERS.get(job.kind)
        if runner is None:
            known = ", ".join(sorted(RUNNERS))
            raise UnknownTaskKind(f"unknown task kind {job.kind!r}; known kinds: {known}")
        return runner(self.context, job)


def run_dispatcher(settings: Settings, stop: threading.Event, connect_timeout_s: float = 60.0) -> int:
    """Run a dispatcher until ``stop`` is set (by SIGTERM/SIGINT in ``spacetime dispatcher``).

    Waits up to ``connect_timeout_s`` for Redis and the Dask scheduler, so containers
    can start in any order; past that it exits with the reason.
    """
    redis = Redis.from_url(settings.redis_url, socket_timeout=30)
    try:
        wait_for(redis.ping, "Redis", settings.redis_url, connect_timeout_s)
        client = Client(settings.dask_scheduler_address, timeout=connect_timeout_s)
    except (TimeoutError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    dispatcher = Dispatcher(settings, client, redis)
    dispatcher.start()
    stop.wait()
    dispatcher.stop()
    client.close()
    return 0
