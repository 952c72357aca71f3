"""The timing record of a job: measured by its dispatcher when the job ends.

    queue_wait_s    requested -> received (time in the queue)
    exec_s          the dispatcher's wall time around the Dask computation
    lead_s          requested -> finished, what the user waited
    task_compute_s  the compute intervals of the job's own tasks, summed (its trace)

docs/metrics.md says where each figure goes.
"""

import time
from dataclasses import asdict, dataclass
from typing import Any

from backend.core.job import Job, now_s


@dataclass
class Timing:
    """The timing record of one job."""

    token: str
    kind: str
    client: str
    status: str
    requested_at: float | None
    received_at: float | None
    finished_at: float
    queue_wait_s: float | None
    exec_s: float
    lead_s: float | None
    task_compute_s: float | None = None
    bytes: int | None = None
    error: str | None = None
    report_url: str | None = None
    timing_url: str | None = None

    def record_fields(self) -> dict[str, Any]:
        """What goes into the Redis job record (status and identity are already there)."""
        skip = {"token", "kind", "client", "status", "requested_at", "received_at", "error"}
        return {k: v for k, v in asdict(self).items() if k not in skip and v is not None}


def make_timing(job: Job, status: str, exec_s: float, **extra: Any) -> Timing:
    finished_at = now_s()
    return Timing(
        token=job.token,
        kind=job.kind,
        client=job.client,
        status=status,
        requested_at=job.requested_at,
        received_at=job.received_at,
        finished_at=finished_at,
        queue_wait_s=_elapsed(job.requested_at, job.received_at),
        exec_s=round(exec_s, 6),
        lead_s=_elapsed(job.requested_at, finished_at),
        **extra,
    )


def _elapsed(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start), 6)


class Stopwatch:
    """``with Stopwatch() as w: ...`` then ``w.seconds``."""

    seconds: float = 0.0

    def __enter__(self) -> "Stopwatch":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
