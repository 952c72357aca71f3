"""Turning a client's request into a queued job: admission, cost, quota, store.

The API's routes read and check the HTTP side; this decides whether the job may enter
(the client's rate, its backlog quota), what it costs in the fair queue (its number of
blocks), and stores it. Blocking calls (Redis, the uploads store) run in threads.
"""

import logging
import math
from collections.abc import AsyncIterator
from typing import cast

import fsspec
from redis import Redis
from starlette.concurrency import run_in_threadpool

from backend import keys
from backend.admission import RateLimiter
from backend.clients import ClientSettings
from backend.exceptions import InputTooLarge, OverQuota
from backend.job import Job, Kind, Lane, new_token
from backend.settings import Settings
from backend.store import JobStore, Submission
from backend.uploads import check_allowed_url, discard, save_stream

log = logging.getLogger(__name__)


class Submitter:
    """Admits and stores jobs for the API."""

    def __init__(self, settings: Settings, store: JobStore, limiter: RateLimiter):
        self.settings = settings
        self.store = store
        self.limiter = limiter

    async def image(self, caller: ClientSettings, png: bytes) -> Job:
        await run_in_threadpool(self.limiter.admit, caller)
        job = Submission(Kind.randomize, Lane.interactive, caller.name, size=len(png), input_bytes=png)
        return await self._store(caller, job)

    async def upload(self, caller: ClientSettings, chunks: AsyncIterator[bytes], declared: int | None) -> Job:
        """Stream an even-sum file into the uploads store, then queue it. A body the client's
        backlog quota cannot take is refused before a byte is stored when its length is
        declared, and deleted when it is not."""
        await run_in_threadpool(self.limiter.admit, caller)
        if declared is not None:
            await self._check_backlog(caller, declared)
        token = new_token()
        url = f"{self.settings.uploads_url}/{token}.txt"
        options = self.settings.storage_options(url)
        size = await save_stream(chunks, url, self.settings.max_upload_bytes, options)
        job = Submission(Kind.even_sum, Lane.bulk, caller.name, self._cost(size), size, input_url=url, token=token)
        try:
            return await self._store(caller, job)
        except BaseException:
            await run_in_threadpool(discard, url, options)
            raise

    async def url(self, caller: ClientSettings, url: str) -> Job:
        """Queue an even sum over a file already in an allowed store, named by URL."""
        # In a thread: resolving file:// links lstat's each folder of the path.
        url = await run_in_threadpool(check_allowed_url, url, self.settings.allowed_url_prefixes)
        await run_in_threadpool(self.limiter.admit, caller)
        size = await run_in_threadpool(self._size, url)
        job = Submission(Kind.even_sum, Lane.bulk, caller.name, self._cost(size), size, input_url=url)
        return await self._store(caller, job)

    async def _store(self, caller: ClientSettings, job: Submission) -> Job:
        limit = caller.max_backlog_bytes or None
        if limit is not None and job.size > limit:
            raise InputTooLarge(
                f"the job's {job.size} bytes are over the backlog quota of {limit} bytes of client {caller.name!r}"
            )
        return await run_in_threadpool(self.store.submit, job, limit)

    async def _check_backlog(self, caller: ClientSettings, size: int) -> None:
        limit = caller.max_backlog_bytes
        if not limit:
            return
        if size > limit:
            raise InputTooLarge(
                f"the job's {size} bytes are over the backlog quota of {limit} bytes of client {caller.name!r}"
            )
        backlog = await run_in_threadpool(self.backlog_bytes, caller.name)
        if backlog + size > limit:
            raise OverQuota(
                f"client {caller.name!r} has {backlog} bytes of jobs queued or running; {size} more would pass "
                f"its backlog quota of {limit} bytes",
                retry_after_s=keys.BACKLOG_RETRY_AFTER_S,
            )

    def backlog_bytes(self, client: str) -> int:
        redis: Redis = self.store.redis
        return int(cast(bytes | None, redis.hget(keys.BACKLOG_BYTES, client)) or 0)

    def _cost(self, size: int) -> int:
        """Blocks of a file of ``size`` bytes: what the job costs in the fair queue."""
        return max(1, math.ceil(size / self.settings.even_sum_block_bytes))

    def _size(self, url: str) -> int:
        """The file's size, to cost the job; 0 when it cannot be read now (the job will
        then fail with the reason, as it would have anyway)."""
        try:
            fs, path = fsspec.core.url_to_fs(url, **self.settings.storage_options(url))
            return int(fs.info(path).get("size") or 0)
        except (OSError, ValueError) as exc:
            log.info("cannot stat %s to cost its job (%s); costing it 1 block", url, exc)
            return 0


def over_quota(size: int, limit: int, client: str) -> str:
    return f"the job's {size} bytes are over the backlog quota of {limit} bytes of client {client!r}"
