"""The dispatcher: takes jobs from Redis and runs them on the Dask cluster.

It runs job loops in two lanes (``interactive_concurrency`` loops for image jobs,
``bulk_concurrency`` for even-sum jobs, one thread each: the threads mostly wait on
Redis or Dask, so the GIL is not the limit). A heartbeat thread renews its lease, reaps
the jobs of dead dispatchers and publishes its block tasks in flight. On SIGTERM it
stops claiming, lets running jobs end, and hands back what it still holds.

Every claimed job reaches a final state or goes back to its queue: a run's errors fail
it, a lost attempt (scheduler gone, no worker) requeues it, and what follows the final
write (report, timing record, metrics) is best effort. A job its client cancels is final
already: its run hears of it (backend/dispatch/cancels.py), stops, and writes nothing.
"""

import logging
import threading
import time
from collections import Counter
from typing import cast

from distributed import Client
from redis import Redis, RedisError, ResponseError

from backend.core.exceptions import AttemptLost, UnknownJobKind
from backend.core.job import Job, Lane
from backend.core.kinds import KINDS, load
from backend.core.settings import Settings
from backend.core.waiting import Outage, wait_for
from backend.dispatch.cancels import Cancels
from backend.dispatch.cluster import Cluster
from backend.dispatch.errors import USER_ERRORS, client_message
from backend.dispatch.runners import BlocksInFlight, JobContext, Outcome
from backend.jobs import keys
from backend.jobs.connection import connect
from backend.jobs.doctor import Doctor
from backend.jobs.fairshare import FairShare
from backend.jobs.overview import add_block_seconds
from backend.jobs.queue import Claim, JobQueue, QueuePolicy, new_dispatcher_id
from backend.jobs.store import EndResult, JobStore
from backend.telemetry.metrics import JobMetrics
from backend.telemetry.reports import ReportWriter, report_store_url
from backend.telemetry.timing import Stopwatch, Timing, make_timing
from compute.defaults import BULK_RESOURCE
from compute.errors import Cancelled
from compute.files import delete_file
from compute.report import compute_spans, task_compute_s

log = logging.getLogger(__name__)
# Past its grace, the time a stopping dispatcher has to hand back its jobs and close its
# cluster client before its process exits regardless: with the scheduler gone (`up`
# SIGKILLed), a Dask client tries to reconnect for 60 s.
HAND_BACK_S = 5.0

# The heartbeat also scans for processing lists whose owner is missing from the
# `dispatchers` set every this many beats (a SCAN costs more than reading the set).
SCAN_EVERY_BEATS = 30
# The most time a beat spends deleting image files (keys.IMAGE_FILES): far under the lease
# (lease_s, 10 s, renewed every third of it), however slow the store is.
FILE_SWEEP_S = 1.0


class Dispatcher:
    def __init__(self, settings: Settings, cluster: Cluster | Client, redis: Redis | None = None):
        self.settings = settings
        self.redis = redis or connect(settings.redis_url, socket_timeout=30)
        self.cluster = cluster if isinstance(cluster, Cluster) else _cluster_of(settings, cluster)
        self.store = JobStore(self.redis, settings.result_ttl_s)
        self.queue = JobQueue(self.redis, new_dispatcher_id(), settings.lease_s, QueuePolicy.of(settings))
        share = FairShare(self.redis, lambda: self.cluster.threads(BULK_RESOURCE), settings.default_weight)
        self.cancels = Cancels(self.redis)
        self.context = JobContext(self.cluster, self.store, settings, share, BlocksInFlight(), self.cancels)
        self.metrics = JobMetrics(self.redis, settings)
        self.doctor = Doctor(self.redis)
        self.reports = ReportWriter(settings)
        # Idle pooled connections would each fail once after Redis is back: drop them.
        self.outage = Outage(
            log, "Redis", on_start=lambda: self.redis.connection_pool.disconnect(inuse_connections=False)
        )
        # Tokens our job loops are handling now, counted: a job one loop hands back can be
        # claimed by another loop of ours before the first one is done with it.
        self._active: Counter[str] = Counter()
        self._active_lock = threading.Lock()
        self._strays: set[str] = set()  # tokens in our processing list that no loop handled at the last beat
        self.stopping = threading.Event()  # no new claims
        self._released = threading.Event()  # job loops are done: stop renewing the lease
        self._heartbeat: threading.Thread | None = None
        self._job_threads: list[threading.Thread] = []

    @property
    def id(self) -> str:
        return self.queue.id

    def start(self) -> None:
        """Start the heartbeat and the job loops of both lanes, each in its own thread."""
        self.queue.heartbeat({})
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        listener = threading.Thread(target=self.cancels.listen, args=(self._released,), name="cancels", daemon=True)
        listener.start()
        loops = [Lane.interactive] * self.settings.interactive_concurrency + [
            Lane.bulk
        ] * self.settings.bulk_concurrency
        self._job_threads = [
            threading.Thread(target=self._job_loop, args=(lane,), name=f"{lane}-{i}", daemon=True)
            for i, lane in enumerate(loops)
        ]
        for thread in (self._heartbeat, *self._job_threads):
            thread.start()
        log.info(
            "dispatcher %s started: %d interactive and %d bulk job loops",
            self.id,
            self.settings.interactive_concurrency,
            self.settings.bulk_concurrency,
        )

    def stop(self) -> None:
        """Stop claiming, give running jobs ``shutdown_grace_s`` to end, hand back the rest."""
        self.stopping.set()
        with self.outage.watch():  # idle loops sleep on their wake lists: wake them to leave now
            self.queue.wake(Lane.interactive, self.settings.interactive_concurrency)
            self.queue.wake(Lane.bulk, self.settings.bulk_concurrency)
        # Idle loops leave within one claim timeout, busy ones get the grace period. After
        # the deadline no loop claims, so none can take a token after the release.
        deadline = time.monotonic() + grace_s(self.settings)
        for thread in self._job_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # The lease was renewed until now, so nobody reaped jobs we were still finishing;
        # the heartbeat stops before the release so it cannot re-register us after it.
        self._released.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        try:
            requeued = self.queue.release()
        except RedisError as exc:  # what we hold is requeued by a reaper once our lease lapses
            log.warning("dispatcher %s stopped without handing back its jobs: %s", self.id, exc)
            return
        log.info("dispatcher %s stopped; requeued %d job(s)", self.id, requeued)

    def _heartbeat_loop(self) -> None:
        period = self.settings.lease_s / keys.LEASE_RENEWALS_PER_PERIOD
        beats = 0
        while not self._released.wait(period):
            beats += 1
            with self.outage.watch():
                self.queue.heartbeat(self.context.in_flight.snapshot())
                if reaped := self.queue.reap(scan=beats % SCAN_EVERY_BEATS == 0):
                    log.warning("requeued %d job(s) of dead dispatchers", reaped)
                self._requeue_strays()
                self.cancels.check()
                self.metrics.publish_gauges()
                self._check_counters()
                self._drop_due_files()

    def _check_counters(self) -> None:
        """The doctor's periodic check (one dispatcher per ``doctor_interval_s``): drift
        is logged, for `spacetime doctor --repair`; a counter off means a bug to find,
        which an automatic repair would hide. The same turn deletes inputs left behind."""
        interval = self.settings.doctor_interval_s
        if not interval:
            return
        try:
            drifts = self.doctor.try_periodic(self.id, interval)
        except ResponseError:  # the check's own failure: never the heartbeat's, nor an outage
            log.exception("the periodic counter check failed; the heartbeat goes on")
            return
        for drift in drifts or ():
            log.warning("counter drift: %s (spacetime doctor --repair fixes it)", drift)
        if drifts is not None:  # this dispatcher's turn
            self._drop_left_inputs()

    def _drop_left_inputs(self) -> None:
        """Inputs of jobs that ended in a process that died before it deleted them."""
        for job in self.store.left_inputs(keys.INPUT_DROP_GRACE_S, keys.INPUT_DROP_BATCH):
            log.warning("job %s: its input outlived its end (its process died first); deleting it", job.token)
            self.store.drop_input(job, self.settings)

    def _drop_due_files(self) -> None:
        """Image files whose time has come (keys.IMAGE_FILES): outputs past their result's
        expiry, and files of jobs that were never stored or of attempts that were lost.
        Every dispatcher sweeps, each beat, for at most FILE_SWEEP_S: a slow store never
        holds up the lease's renewal, and what is left is due at the next beat. A file two
        of them delete at once is deleted once."""
        deadline = time.monotonic() + FILE_SWEEP_S
        for url in self.store.files_due(keys.IMAGE_FILES_BATCH):
            if time.monotonic() > deadline:
                return
            try:
                delete_file(url, self.settings.storage_options(url))
            except OSError as exc:  # stays listed: the next turn tries again
                log.warning("could not delete the image file %s: %s", url, exc)
                continue
            self.store.forget_file(url)

    def _job_loop(self, lane: Lane) -> None:
        while not self.stopping.is_set():
            try:
                with self.outage.watch():
                    claim = self.queue.claim(lane)
                    if claim is None:
                        self.queue.wait_for_work(lane)
                    else:
                        self.handle(claim)
            except Exception:  # a bug of ours: say so, and keep the loop alive
                log.exception("%s job loop error; going on", lane)
                self.stopping.wait(1.0)
            if self.outage.active:
                # Redis is away: the claimed token (if any) sits in our processing list, and
                # comes back to its queue by our stray check or a reaper once Redis is back.
                self.stopping.wait(1.0)

    def _requeue_strays(self) -> None:
        """Requeue tokens of our processing list that no job loop of ours handles: a loop
        that lost Redis mid-job (its final write failed) left them there, under a lease we
        keep renewing, so no reaper would. Seen at two beats in a row, so that a token
        claimed a moment ago is not taken for one."""
        held = {token.decode() for token in cast(list[bytes], self.redis.lrange(self.queue.processing_key, 0, -1))}
        with self._active_lock:
            strays = held - set(self._active)
        for token in strays & self._strays:
            if self.store.requeue_token(token, self.id, f"dispatcher {self.id} lost track of it (Redis was away)"):
                log.warning("job %s: requeued; a Redis outage interrupted its run", token)
        self._strays = strays

    def handle(self, claim: Claim) -> None:
        """Run one claimed job to a final state (or back to its queue), then record it."""
        with self._active_lock:
            self._active[claim.job.token] += 1
        try:
            with self.cancels.watch(claim.job.token):
                self._handle(claim)
        finally:
            with self._active_lock:
                self._active[claim.job.token] -= 1
                if not self._active[claim.job.token]:
                    del self._active[claim.job.token]

    def _handle(self, claim: Claim) -> None:
        job = claim.job
        if claim.gave_up:  # the claim already failed it
            log.warning(
                "job %s: gave up after %d attempts; the last was lost: %s", job.token, job.attempts - 1, job.last_error
            )
            self.store.drop_input(job, self.settings)
            self._record(job, make_timing(job, "errored", 0.0, error=job.error), None)
            return
        if claim.unreadable:
            self.store.fail(job, claim.unreadable)
            return
        started = time.time()
        with Stopwatch() as watch:
            outcome, error = self._run_guarded(job)
        if outcome is None and error is None:  # lost attempt (back in its queue), or cancelled
            return
        timing = make_timing(
            job,
            "errored" if error else "finished",
            watch.seconds,
            error=error,
            report_url=report_store_url(self.settings, job.token, "html"),
            timing_url=report_store_url(self.settings, job.token, "json"),
            **(outcome.fields if outcome else {}),
        )
        if error or outcome is None:
            written = self.store.fail(job, error or "no result", **timing.record_fields())
        else:
            written = self.store.finish(job, outcome.output, **timing.record_fields())
        if written is EndResult.stale:
            log.warning(
                "job %s: discarded the result of attempt %d: the job is held elsewhere", job.token, job.attempts
            )
            return
        if written is EndResult.ok:
            self.store.drop_input(job, self.settings)
            self._record(job, timing, started)

    def _run_guarded(self, job: Job) -> tuple[Outcome | None, str | None]:
        """(outcome, None), (None, error), or (None, None) when the attempt was lost and the
        job handed back to its queue, or the job was cancelled."""
        try:
            return self._run(job), None
        except USER_ERRORS as exc:
            return None, client_message(exc, job, self.settings.uploads_url)
        except RedisError:  # not the job's fault: the loop's outage handling takes it
            raise
        except Cancelled:  # its record says so already: nothing to write
            log.info("job %s: cancelled by its client; its tasks are cancelled", job.token)
            return None, None
        except AttemptLost as exc:
            if self.store.requeue(job, str(exc)):
                log.warning("job %s: attempt %d lost (%s); back in its queue", job.token, job.attempts, exc)
            return None, None
        except Exception as exc:
            if self._released.is_set():
                log.info("job %s was handed back at shutdown", job.token)
                return None, None
            return None, client_message(exc, job, self.settings.uploads_url)

    def _run(self, job: Job) -> Outcome:
        kind = KINDS.get(job.kind)
        if kind is None:
            known = ", ".join(sorted(KINDS))
            raise UnknownJobKind(f"unknown job kind {job.kind!r}; known kinds: {known}")
        return load(kind.runner)(self.context, job)

    def _record(self, job: Job, timing: Timing, started: float | None) -> None:
        """After the final write, best effort: the report's trace (its tasks' compute time on
        the record and in the lane's block-seconds), then the timing record and metrics, each
        on its own (a worker that died with the job must not cost its timing)."""
        if started is not None:
            try:
                trace = self.reports.capture(self.cluster.client, job, started, timing)
                timing.task_compute_s = round(task_compute_s(trace), 6)
                self.store.annotate(job.token, task_compute_s=timing.task_compute_s)
                if job.lane is not None:
                    add_block_seconds(self.redis, job.lane, job.client, compute_spans(trace), time.time())
            except (RedisError, OSError, AttemptLost) as exc:
                log.warning("job %s: no report: %s", job.token, exc)
        try:
            self.reports.save_timing(timing)
            self.metrics.count(timing)
        except (RedisError, OSError) as exc:
            log.warning("job %s: could not record its timing: %s", job.token, exc)


def _cluster_of(settings: Settings, client: Client) -> Cluster:
    """A Cluster around a client someone else owns (tests, notebooks)."""
    return Cluster(settings.dask_scheduler_address, settings.dask_timeout_s, settings.no_workers_grace_s, client=client)


def grace_s(settings: Settings) -> float:
    """How long a stopping dispatcher's loops have to end: the shutdown grace, and at
    least one claim timeout (idle loops wait that long on their wake lists)."""
    return max(settings.shutdown_grace_s, keys.CLAIM_TIMEOUT_S + 1)


def stopping_bound_s(settings: Settings) -> float:
    """How long after SIGTERM a dispatcher process exits at the latest (``spacetime
    dispatcher``): its grace, then HAND_BACK_S to hand back its jobs and close its cluster
    client. Within `spacetime up`'s own bound (backend.run.supervisor.STOP_MARGIN_S)."""
    return grace_s(settings) + HAND_BACK_S


def run_dispatcher(settings: Settings, stop: threading.Event) -> int:
    """Run a dispatcher until ``stop`` is set (by SIGTERM/SIGINT in ``spacetime dispatcher``).

    Waits up to ``dask_timeout_s`` for Redis and the Dask scheduler, so containers can
    start in any order; past that it exits with the reason.
    """
    redis = connect(settings.redis_url, socket_timeout=30)
    cluster = Cluster(settings.dask_scheduler_address, settings.dask_timeout_s, settings.no_workers_grace_s)
    try:
        wait_for(redis.ping, "Redis", settings.redis_url, settings.dask_timeout_s)
        cluster.client  # noqa: B018  # connects, or raises
    except (TimeoutError, OSError, AttemptLost) as exc:
        log.error("cannot start: %s", exc)
        return 1
    dispatcher = Dispatcher(settings, cluster, redis)
    dispatcher.start()
    stop.wait()
    dispatcher.stop()
    cluster.close()
    return 0
