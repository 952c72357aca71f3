"""The job record: what ``result:<token>`` holds, as a typed model."""

import time
import uuid
from enum import StrEnum

from pydantic import BaseModel


class JobStatus(StrEnum):
    """The original system's four states; extra detail goes in other fields, never here."""

    requested = "requested"  # the API stored it and queued its token (or it was requeued)
    received = "received"  # a dispatcher took it and runs it on Dask
    finished = "finished"  # the result is stored under result:<token>:output
    errored = "errored"  # it failed; `error` says why in words a user can act on


FINAL = (JobStatus.finished, JobStatus.errored)


class Lane(StrEnum):
    """Jobs wait and run in one of two lanes, each with job loops of its own, so that
    bulk jobs can never hold every slot an interactive job needs."""

    interactive = "interactive"  # small jobs a person waits for (images): one task each
    bulk = "bulk"  # big jobs (even-sum): many block tasks, windowed on the cluster


class Progress(BaseModel):
    done: int
    total: int


class Job(BaseModel):
    token: str
    # A plain string, not a declared kind (backend/core/kinds.py): a record queued by hand
    # may name anything, and the dispatcher must be able to read it to mark it errored.
    kind: str = "unknown"
    status: JobStatus
    client: str = "anonymous"
    # The registration id of the key that submitted it (backend/jobs/clients.py); None in
    # open mode and for keys made before ids. In keys mode it, not the name, is the owner.
    client_id: str | None = None
    lane: Lane | None = None
    # What the job costs in the fair queue: its number of blocks (an image job is 1).
    cost: int = 1
    requested_at: float | None = None
    received_at: float | None = None
    finished_at: float | None = None
    dispatcher: str | None = None
    # How many times a dispatcher took it; capped by settings.max_attempts.
    attempts: int = 0
    # Why the previous attempt did not end it (its dispatcher died, the scheduler went away).
    last_error: str | None = None
    input_url: str | None = None
    # The service stored the input for this job (an upload, not a URL the client named):
    # deleted after the final write, unless the client asked to keep it (keep_input).
    delete_input: bool | None = None
    progress: Progress | None = None
    error: str | None = None
    # True once its client cancelled it (DELETE /tasks/<token>); it is `errored` then.
    cancelled: bool | None = None
    # Timings in seconds, filled in when the job ends (see docs/metrics.md).
    queue_wait_s: float | None = None
    exec_s: float | None = None
    lead_s: float | None = None
    task_compute_s: float | None = None
    # Input bytes as the run measured them (shown to the client; the timing record's).
    bytes: int | None = None
    # Input bytes at submission, counted against the client's backlog quota: released by
    # the final write exactly as admitted, whatever the run measured.
    admitted_bytes: int | None = None
    # What its input counts against the bytes its client may hold in Redis (the input's
    # cost to Redis and room for its output, submit.lua): released by the final write.
    held_bytes: int | None = None
    report_url: str | None = None
    timing_url: str | None = None
    # A finished image's output kept as a file (settings.image_file_bytes), not in Redis,
    # and its size.
    output_url: str | None = None
    output_bytes: int | None = None

    def given_input_url(self, uploads_url: str) -> str | None:
        """The input URL if the client named it; None for the job's own upload, whose URL
        (``<uploads_url>/<token>.txt``, backend/api/submission.py, or an image's file) is a
        server path the client never sent."""
        own = (f"{uploads_url}/{self.token}.txt", image_file_url(uploads_url, self.token))
        return None if self.input_url in own else self.input_url


def image_file_url(uploads_url: str, name: str) -> str:
    """Where an image's bytes kept as a file go (settings.image_file_bytes): ``name`` is its
    job's token for its input, its task's key for an attempt's output."""
    return f"{uploads_url}/images/{name}.png"


def new_token() -> str:
    return uuid.uuid4().hex


def now_s() -> float:
    """Epoch seconds rounded to the millisecond, the precision the contract promises."""
    return round(time.time(), 3)
