"""What each job kind does on the cluster, as seen from the dispatcher.

A runner takes the dispatcher's ``JobContext`` and the job, submits Dask work whose
keys start with ``<kind>-<token>`` (so the job's tasks can be found in the task stream
and in performance reports) and returns the raw result bytes (or the key a worker task
stored them under) plus figures to record. It waits on Dask only through ``ctx.cluster``
(bounded waits), raises InvalidInput (or an OSError) for what the user must fix, and
anything else for a failure of ours.

Each kind names its runner in its declaration (backend/core/kinds.py), by dotted path.
Adding a kind: docs/architecture.md, "How to add a job kind".
"""

import hashlib
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distributed import Future
from redis import RedisError

from backend.core.exceptions import AttemptLost
from backend.core.job import Job, image_file_url
from backend.core.settings import Settings
from backend.dispatch.cancels import Cancels
from backend.dispatch.cluster import Cluster
from backend.jobs import keys
from backend.jobs.fairshare import FairShare
from backend.jobs.store import JobStore, Staged, StoredFile
from compute.defaults import BULK_RESOURCE, INTERACTIVE_RESOURCE
from compute.digits import json_ints
from compute.errors import InvalidImage, InvalidInput
from compute.even_sum import BlockSum
from compute.image import IMAGE_PRIORITY
from compute.png import png_header
from compute.stored import randomize_file, randomize_stored

log = logging.getLogger(__name__)


class BlocksInFlight:
    """Block tasks in flight per "<lane>|<client>", for /metrics (the heartbeat publishes it)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def set(self, job: Job, blocks: int) -> None:
        with self._lock:
            self._counts[f"{job.lane}|{job.client}|{job.token}"] = blocks

    def snapshot(self) -> dict[str, int]:
        """Blocks in flight by "<lane>|<client>"."""
        totals: Counter[str] = Counter()
        with self._lock:
            for name, blocks in list(self._counts.items()):
                if blocks <= 0:
                    del self._counts[name]
                else:
                    totals[name.rsplit("|", 1)[0]] += blocks
        return dict(totals)


@dataclass
class JobContext:
    """What runners get from their dispatcher."""

    cluster: Cluster
    store: JobStore
    settings: Settings
    share: FairShare
    in_flight: BlocksInFlight
    cancels: Cancels


@dataclass
class Outcome:
    # The result's bytes, or where a worker task stored them (a Redis key, or a file).
    output: bytes | Staged | StoredFile
    # Extra record fields, e.g. {"bytes": n}.
    fields: dict[str, Any] = field(default_factory=dict)


def key_prefix(job: Job) -> str:
    return f"{job.kind}-{job.token}"


def image_task_key(job: Job) -> str:
    """The image task's key: the job's, and its attempt's (the dispatcher's id by a digest:
    keys are shown in reports, and the id names a host)."""
    holder = hashlib.sha256((job.dispatcher or "").encode()).hexdigest()[:8]
    return f"{key_prefix(job)}-{holder}-{job.attempts}"


def run_randomize(ctx: JobContext, job: Job) -> Outcome:
    """One Dask task: the image is small, a graph of tiles would cost more than it saves.

    The task reads the PNG from Redis and stores its result there itself, at this
    attempt's staged key (compute/stored.py), or, for an image kept as files
    (settings.image_file_bytes), from its input file to a file of this attempt's: the bytes
    pass through neither the scheduler nor this dispatcher. The task key names the attempt
    too: Dask runs a key once, and a later attempt sharing an earlier one's task would find
    no output of its own.
    """
    settings = ctx.settings
    if job.input_url is not None:
        output = image_file_url(settings.uploads_url, image_task_key(job))
        ctx.store.hold_file(output, keys.STAGED_TTL_S)  # deleted then, unless the final write keeps it
        future = submit_image(ctx, job, randomize_file, job.input_url, output, settings.storage_options(output))
        # Its size comes back: one more round trip through the scheduler, for a large image.
        return Outcome(StoredFile(output, ctx.cluster.result(future)), {"bytes": job.bytes})
    staged = keys.staged(job.token, job.dispatcher or "", job.attempts)
    future = submit_image(
        ctx, job, randomize_stored, settings.worker_redis_url, keys.input_(job.token), staged, keys.STAGED_TTL_S
    )
    try:
        ctx.cluster.finished(future)
    except RedisError as exc:  # the worker's, not ours: say so, and let another attempt try
        log.warning("job %s: its worker could not reach Redis: %s", job.token, exc)
        raise AttemptLost("a worker could not reach Redis") from None
    return Outcome(Staged(staged), {"bytes": job.bytes})


def submit_image(ctx: JobContext, job: Job, *task: Any) -> Future:
    """The image task ``task`` (a function and its first arguments), as every image runs."""
    return ctx.cluster.client.submit(
        *task,
        block=ctx.settings.image_block_px,
        max_pixels=ctx.settings.max_image_pixels,
        key=image_task_key(job),
        priority=IMAGE_PRIORITY,
        resources=ctx.cluster.resources(image_pool(ctx, job)),
    )


def image_pool(ctx: JobContext, job: Job) -> str:
    """The worker pool an image runs in: the interactive one, unless it has more than
    ``large_image_pixels`` (its IHDR says, in its input's head field: 64 bytes). A large image runs
    in the bulk pool, at its lower CPU priority, ahead of blocks (IMAGE_PRIORITY): then a
    client sending large images takes the cores other clients' small ones need only when
    they are idle, however many it sends (bench/hostile.py, scenario 1)."""
    limit = ctx.settings.large_image_pixels
    if not limit:
        return INTERACTIVE_RESOURCE
    try:
        head = ctx.store.body_head(job, ctx.settings.storage_options(job.input_url or ""))
        width, height, _, _ = png_header(head)
    except InvalidImage:  # its task says what is wrong with it
        return INTERACTIVE_RESOURCE
    return BULK_RESOURCE if width * height > limit else INTERACTIVE_RESOURCE


def run_even_sum(ctx: JobContext, job: Job) -> Outcome:
    """Block tasks paced by the client's fair share (backend/jobs/fairshare.py), a tree
    reduction, and progress as blocks complete; a cancel stops it between two waits."""
    url = job.input_url
    if url is None:
        raise InvalidInput("the job names no input file; submit it again")
    blocks = BlockSum(
        ctx.cluster.client,
        url,
        block_bytes=ctx.settings.even_sum_block_bytes,
        storage_options=ctx.settings.storage_options(url),
        key_prefix=key_prefix(job),
        resources=ctx.cluster.resources(BULK_RESOURCE),
        part_bytes=ctx.settings.s3_part_bytes,
        concurrency=ctx.settings.s3_concurrency,
    )
    ctx.store.progress(job, 0, blocks.n_blocks)

    def on_progress(done: int, in_flight: int) -> None:
        ctx.in_flight.set(job, in_flight)
        ctx.store.progress(job, done, blocks.n_blocks)

    try:
        result = blocks.run(ctx.share.pacing(job), on_progress, ctx.cluster.wait_any, ctx.cancels.asker(job.token))
    finally:
        ctx.in_flight.set(job, 0)
    # Digit for digit at any size: json.dumps stops at 4300 digits.
    return Outcome(json_ints(result).encode(), {"bytes": result["bytes"]})
