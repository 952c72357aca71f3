"""The dispatcher's side of the Dask cluster: a connection that survives the scheduler,
waits that are always bounded, and what the workers offer.

Every wait on Dask goes through ``Cluster.wait_any``: it waits in short slices and
between them checks that the scheduler is connected and that some worker is there. A
job whose futures were lost with the scheduler, or that has had no worker for
``no_workers_grace_s``, raises AttemptLost: the dispatcher puts it back in its queue and
another attempt runs it on the cluster as it is then.
"""

import logging
import threading
import time
from concurrent.futures import CancelledError
from typing import Any

import distributed
from distributed import Client, Future

from backend.core.exceptions import AttemptLost

log = logging.getLogger(__name__)

# How often a wait looks at the scheduler connection and the workers.
CHECK_S = 1.0
# How long what the workers offer (threads, resources) is taken as known. Asking the
# scheduler is a round trip and a walk over every worker: once a job would cost the
# scheduler more than the image task's own scheduling.
WORKERS_KNOWN_S = 1.0
LOST_SCHEDULER = "the connection to the Dask scheduler was lost while the job ran"
UNREACHABLE = "the Dask scheduler is unreachable"


class Cluster:
    """A Dask client for a dispatcher, replaced by a new one when it closes for good (the
    scheduler stayed away longer than the client's reconnect timeout)."""

    def __init__(self, address: str, connect_timeout_s: float, no_workers_grace_s: float, client: Client | None = None):
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self.no_workers_grace_s = no_workers_grace_s
        self._client = client
        self._owns_client = client is None
        if client is not None:
            record_tasks(client)
        self._lock = threading.Lock()
        self._no_workers_since: float | None = None
        self._workers: tuple[float, list[dict]] = (-WORKERS_KNOWN_S, [])

    @property
    def client(self) -> Client:
        """The connected client. While it reconnects to a scheduler that went away, wait for
        it (``connect_timeout_s`` at most); when it gave up, connect a new one. AttemptLost
        if the scheduler stays unreachable."""
        with self._lock:
            deadline = time.monotonic() + self.connect_timeout_s
            while self._client is not None and self._client.status == "connecting":
                if time.monotonic() > deadline:
                    log.warning("the Dask scheduler at %s is unreachable", self.address)
                    raise AttemptLost(UNREACHABLE)
                time.sleep(0.1)
            if self._client is None or self._client.status in ("closed", "closing"):
                self._client = self._connect()
            return self._client

    def _connect(self) -> Client:
        try:
            client = Client(self.address, timeout=self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            log.warning("the Dask scheduler at %s is unreachable: %s", self.address, exc)
            raise AttemptLost(UNREACHABLE) from None
        record_tasks(client)
        self._owns_client = True
        log.info("connected to the Dask scheduler at %s", self.address)
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._owns_client:
                self._client.close()

    def wait_any(self, futures: set[Future]) -> set[Future]:
        """Some of ``futures`` that are done, waiting as long as the cluster can run them."""
        while True:
            try:
                done = set(distributed.wait(futures, timeout=CHECK_S, return_when="FIRST_COMPLETED").done)
            except TimeoutError:
                self._check_health()
                continue
            except CancelledError:  # the client lost the scheduler: it cancels every future
                raise AttemptLost(LOST_SCHEDULER) from None
            if any(future.status == "cancelled" for future in done):
                raise AttemptLost(LOST_SCHEDULER)
            return done

    def finished(self, future: Future) -> None:
        """Wait, bounded as in ``wait_any``, for ``future`` to finish; raise its error if it
        failed. Its result stays on its worker: fetching it goes through the scheduler,
        a round trip a job that has what it needs elsewhere (Redis) does not make."""
        self.wait_any({future})
        if future.status == "finished":
            return
        self.result(future)  # raises the task's error

    def result(self, future: Future) -> Any:
        """``future.result()``, with the wait bounded as in ``wait_any``."""
        self.wait_any({future})
        try:
            return future.result()
        except CancelledError:
            raise AttemptLost(LOST_SCHEDULER) from None

    def _check_health(self) -> None:
        client = self.client
        if client.status != "running":
            log.warning("lost the connection to the Dask scheduler at %s", self.address)
            raise AttemptLost(LOST_SCHEDULER)
        if self._known_workers(fresh=True):
            self._no_workers_since = None
            return
        now = time.monotonic()
        self._no_workers_since = self._no_workers_since or now
        if now - self._no_workers_since > self.no_workers_grace_s:
            raise AttemptLost(f"no Dask worker has been connected for {self.no_workers_grace_s:.0f} s")

    def threads(self, resource: str) -> int:
        """Worker threads that can run tasks needing ``resource``: its slots where workers
        offer it, else every thread."""
        workers = self._known_workers()
        slots = sum(int(w.get("resources", {}).get(resource, 0)) for w in workers)
        return slots or sum(w.get("nthreads", 0) for w in workers) or 1

    def resources(self, resource: str) -> dict | None:
        """``{resource: 1}`` for a task when some worker offers ``resource``, else None (a
        restriction nobody can meet would leave the task waiting forever)."""
        workers = self._known_workers()
        return {resource: 1} if any(resource in w.get("resources", {}) for w in workers) else None

    def _known_workers(self, fresh: bool = False) -> list[dict]:
        """The scheduler's view of each worker, asked again after ``WORKERS_KNOWN_S``."""
        asked_at, workers = self._workers
        if fresh or time.monotonic() - asked_at > WORKERS_KNOWN_S:
            workers = list(self.client.scheduler_info().get("workers", {}).values())
            self._workers = (time.monotonic(), workers)
        return workers


def record_tasks(client: Client) -> None:
    """Have the scheduler record task timings from now on (the task stream that each job's
    report is captured from, compute/report.py)."""
    client.get_task_stream(start=0, stop=0)
