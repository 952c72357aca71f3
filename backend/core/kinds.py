"""Job kinds, each declared once; everything else derives from the declaration.

A kind names its lane, what its door takes, its result's media type and shape, and its
runner. From ``KINDS`` come the API's routes (``POST /<name>``, ``/<name>/{token}/status``
and ``/result``; file kinds also get direct uploads), the kind -> lane table of the Lua
scripts, the CLI's choices, the command-line client's way of sending and saving each
kind, and the list of routes the OpenAPI test expects. Adding a kind: docs/architecture.md,
"How to add a job kind".

The runner and the input check are named by dotted path (``module:function``), loaded
only where they are called: the API never imports what the dispatcher runs (numba above
all), and this module imports nothing heavy.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

from backend.core.job import Lane


@dataclass(frozen=True)
class Body:
    """A small input sent whole as the request body, kept in Redis (or, large, as a file) until its job ends."""

    media_type: str
    # The Settings field that caps it, in bytes: a setting, so operators can change it.
    max_bytes_setting: str
    # ``module:function(bytes)`` raising compute.errors.InvalidInput for a body the kind
    # cannot take: refused at the door (400) rather than errored on a worker. Called on the
    # whole body, or on its first ``head_bytes`` when it is written to a file as it arrives
    # (an image kept as files: backend/api/submission.py, Submitter.keeps_as_file).
    check: str | None = None
    # ``module:function(bytes) -> int``: the most bytes the job's output can take, which
    # it holds room for in Redis from its submit (None: an output of a few bytes). Called
    # on the body's first ``head_bytes`` (to reserve that room before the rest is read: an
    # InvalidInput there is a 400) and on the whole body.
    output_bound: str | None = None
    head_bytes: int = 0
    # ``module:function(head, limit)`` raising InvalidInput for a body its first
    # ``head_bytes`` already refuse, ``limit`` being the Settings field ``head_limit_setting``
    # (an image over the pixels workers decode: a 400 at the door, not an errored job).
    head_check: str | None = None
    head_limit_setting: str = ""


@dataclass(frozen=True)
class File:
    """A large text input, run in blocks: the body streamed into the uploads store,
    ``{"url"}`` naming a file in an allowed store, or a direct multipart upload to S3."""

    media_type: str = "text/plain"


@dataclass(frozen=True)
class JobKind:
    # What URLs, records, task keys and metric labels say: lowercase words and '-'.
    name: str
    lane: Lane
    input: Body | File
    # ``module:function(ctx, job) -> Outcome``, run by dispatchers (backend/dispatch/runners.py).
    runner: str
    # What POST /<name> does, in the OpenAPI document.
    summary: str
    result_media_type: str
    result_description: str
    # A JSON result's shape (for the OpenAPI document and clients); None for raw bytes.
    result_model: type[BaseModel] | None = None

    @property
    def slug(self) -> str:
        """The name as a Python identifier, for operation ids: ``even-sum`` -> ``even_sum``."""
        return self.name.replace("-", "_")

    @property
    def in_blocks(self) -> bool:
        return isinstance(self.input, File)

    def check_head(self, head: bytes, settings: Any) -> None:
        """Refuse (InvalidInput) a body by its first bytes, before room is reserved for it
        or the rest is read (Body.head_check); ``settings``: the service's Settings."""
        if isinstance(self.input, Body) and self.input.head_check is not None:
            load(self.input.head_check)(head, getattr(settings, self.input.head_limit_setting))

    def output_room(self, data: bytes) -> int:
        """The room in Redis a job of input ``data`` holds for its output (Body.output_bound)."""
        bound = self.input.output_bound if isinstance(self.input, Body) else None
        return 0 if bound is None else load(bound)(data)


class EvenSumOut(BaseModel):
    # Exact at any size: JSON numbers have no limit, though JavaScript reads them as doubles.
    sum: int
    even_count: int
    count: int
    bytes: int


RANDOMIZE = JobKind(
    name="randomize",
    lane=Lane.interactive,
    input=Body(
        "image/png",
        "max_image_bytes",
        check="compute.png:check_png",
        output_bound="compute.png:output_bound",
        head_bytes=26,  # the PNG signature and IHDR up to its colour type: compute.png.HEADER_BYTES
        head_check="compute.png:check_pixels",
        head_limit_setting="max_image_pixels",
    ),
    runner="backend.dispatch.runners:run_randomize",
    summary="Submit a PNG whose blocks will be shuffled",
    result_media_type="image/png",
    result_description="The shuffled PNG",
)

EVEN_SUM = JobKind(
    name="even-sum",
    lane=Lane.bulk,
    input=File(),
    runner="backend.dispatch.runners:run_even_sum",
    summary="Sum the even integers of a text file: upload it, or name it by URL",
    result_media_type="application/json",
    result_description="The exact sum of the file's even integers, and counts",
    result_model=EvenSumOut,
)

# name -> declaration: every kind this version serves and runs.
KINDS: dict[str, JobKind] = {kind.name: kind for kind in (RANDOMIZE, EVEN_SUM)}


def lanes() -> dict[str, str]:
    """kind name -> lane, for the Lua scripts (a record queued by hand names only its kind)."""
    return {name: kind.lane.value for name, kind in KINDS.items()}


@cache
def load(path: str) -> Callable[..., Any]:
    """The function at ``module:function``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
