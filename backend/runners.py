"""What each task kind does on the cluster, as seen from the dispatcher.

A runner takes the dispatcher's ``JobContext`` and the job, submits Dask work whose
keys start with ``<kind>-<token>`` (so the job's tasks can be found in the task stream
and in performance reports) and returns the raw result bytes plus figures to record.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from distributed import Client, as_completed

from backend.job import Job, Kind
from backend.settings import Settings
from backend.store import JobStore
from compute.errors import InvalidInput
from compute.even_sum import submit_even_sum
from compute.image import randomize_image


@dataclass
class JobContext:
    client: Client
    store: JobStore
    settings: Settings


@dataclass
class Outcome:
    output: bytes
    # Extra record fields, e.g. {"bytes": n}.
    fields: dict = field(default_factory=dict)


# Dask runs ready tasks of higher priority first: a 25 ms image task should not queue
# behind the many block tasks of a gigabyte even-sum that another client submitted.
IMAGE_PRIORITY = 10


def key_prefix(job: Job) -> str:
    return f"{job.kind}-{job.token}"


def run_randomize(ctx: JobContext, job: Job) -> Outcome:
    """One Dask task: the image is small, a graph of tiles would cost more than it saves."""
    png = ctx.store.input(job.token)
    if png is None:
        raise InvalidInput("the uploaded image has expired; submit it again")
    future = ctx.client.submit(
        randomize_image,
        png,
        block=ctx.settings.image_block_px,
        max_pixels=ctx.settings.max_image_pixels,
        key=f"{key_prefix(job)}-0",
        priority=IMAGE_PRIORITY,
    )
    return Outcome(future.result(), {"bytes": len(png)})


def run_even_sum(ctx: JobContext, job: Job) -> Outcome:
    """One task per block, a tree reduction, and progress as blocks complete."""
    url = job.input_url
    if url is None:
        raise InvalidInput("the job names no input file; submit it again")
    blocks, total = submit_even_sum(
        ctx.client,
        url,
        block_bytes=ctx.settings.even_sum_block_bytes,
        storage_options=ctx.settings.storage_options(url),
        key_prefix=key_prefix(job),
    )
    ctx.store.progress(job.token, 0, len(blocks))
    for done, block in enumerate(as_completed(blocks), start=1):
        if block.status == "error":
            block.result()  # raise now; the other blocks are cancelled when released
        ctx.store.progress(job.token, done, len(blocks))
    result = total.result()
    # The sum stays an exact integer: json writes Python ints digit for digit.
    return Outcome(json.dumps(result).encode(), {"bytes": result["bytes"]})


RUNNERS: dict[str, Callable[[JobContext, Job], Outcome]] = {
    Kind.randomize: run_randomize,
    Kind.even_sum: run_even_sum,
}
