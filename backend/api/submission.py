"""Turning a client's request into a queued job: admission, cost, quota, store.

The API's routes read and check the HTTP side; this decides whether the job may enter
(the client's rate, its backlog quota), what it costs in the fair queue (its number of
blocks), and stores it. Blocking calls (Redis, the uploads store) run in threads.
"""

import hashlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

import fsspec
from redis import Redis
from starlette.concurrency import run_in_threadpool

from backend.api.admission import RateLimiter
from backend.api.direct_uploads import DirectUploads, StartedUpload, plan_parts
from backend.api.schemas import DirectUploadOut
from backend.api.uploads import IMAGE_WRITE_BYTES, check_allowed_url, save_stream, storage_error
from backend.core.exceptions import (
    DirectUploadsUnavailable,
    InputGone,
    InputTooLarge,
    NotReplicated,
    OverQuota,
    UploadNotFound,
)
from backend.core.job import Job, image_file_url, new_token
from backend.core.kinds import KINDS, JobKind
from backend.core.settings import Settings
from backend.jobs import keys
from backend.jobs.clients import ClientSettings
from backend.jobs.reservations import Reservation, Reservations, UploadLimits
from backend.jobs.store import Idempotency, JobStore, Submission
from compute.errors import InvalidInput
from compute.files import delete_file, write_file

log = logging.getLogger(__name__)


class Submitter:
    """Admits and stores jobs for the API."""

    def __init__(self, settings: Settings, store: JobStore, limiter: RateLimiter):
        self.settings = settings
        self.store = store
        self.limiter = limiter
        self.reservations = Reservations(store.redis)
        # Only where the uploads store is S3 (settings.direct_uploads_offered).
        self.direct = DirectUploads(settings, store.redis) if settings.direct_uploads_offered else None

    async def body(
        self, caller: ClientSettings, kind: JobKind, data: bytes, key: str | None = None, token: str | None = None
    ) -> Job:
        """Queue a job whose whole input came as the request body (kept in Redis). ``key``:
        the request's Idempotency-Key (a retry answers the job the first request made);
        ``token``: the job's, when its room was reserved before the body was read."""
        idempotency = await self._idempotency(caller, key, kind.name.encode(), b"body", data)
        await run_in_threadpool(self.limiter.admit, caller)
        return await self._store_body(caller, kind, data, token or new_token(), idempotency)

    def keeps_as_file(self, output_room: int) -> bool:
        """Whether a job whose output may take ``output_room`` bytes keeps its input and
        output as files in the uploads store, not in Redis (settings.image_file_bytes)."""
        return 0 < self.settings.image_file_bytes < output_room

    async def streamed_body(
        self,
        caller: ClientSettings,
        kind: JobKind,
        body: AsyncIterator[bytes],
        max_bytes: int,
        output_room: int,
        token: str,
        key: str | None = None,
    ) -> Job:
        """Queue a job whose input is kept as a file (keeps_as_file), written as it arrives:
        the API holds a write's chunk of it, never all of it. Admitted and stored as
        ``body`` stores it; its Idempotency-Key's fingerprint is hashed as it streams, the
        same as ``body``'s of the same bytes. Its room was reserved before it was read."""
        await run_in_threadpool(self.limiter.admit, caller)
        digest = hashlib.sha256(b"\0".join((kind.name.encode(), b"body", b"")))
        url, options = await self._image_file(token)
        size = await save_stream(hashed(body, digest), url, max_bytes, options, IMAGE_WRITE_BYTES)
        try:
            # Listed again: a slow body may have taken longer than the lease to write.
            await run_in_threadpool(self.store.hold_file, url, keys.IMAGE_LEASE_S)
            idempotency = Idempotency.hashed(caller.name, key, digest.hexdigest()) if key else None
            if idempotency is not None:
                await run_in_threadpool(self.store.check_idempotency, idempotency)
        except BaseException:
            await run_in_threadpool(delete_file, url, options)
            raise
        return await self._store_held_file(
            caller, self._body_job(caller, kind, token, size, output_room, idempotency), url
        )

    async def _store_body(
        self, caller: ClientSettings, kind: JobKind, data: bytes, token: str, idempotency: Idempotency | None
    ) -> Job:
        """Queue a job of input ``data``, held with room for its output: in Redis, or, where
        keeps_as_file, as a file in the uploads store (listed to be deleted before it is
        written, should its job never be stored; deleted at once when its job is refused;
        its job's end deletes it otherwise)."""
        room = kind.output_room(data)
        job = self._body_job(caller, kind, token, len(data), room, idempotency)
        if not self.keeps_as_file(room):
            return await self._store(caller, replace(job, input_bytes=data))
        url, options = await self._image_file(token)
        try:
            await run_in_threadpool(write_file, url, data, options)
        except OSError as exc:
            raise storage_error(exc, url) from exc
        return await self._store_held_file(caller, job, url)

    async def _image_file(self, token: str) -> tuple[str, dict]:
        """Where job ``token``'s input goes as a file, and the store's options for it; listed
        to be deleted at its lease's end before a byte is written (submit.lua unlists it)."""
        url = image_file_url(self.settings.uploads_url, token)
        await run_in_threadpool(self.store.hold_file, url, keys.IMAGE_LEASE_S)
        return url, self.settings.storage_options(url)

    async def _store_held_file(self, caller: ClientSettings, job: Submission, url: str) -> Job:
        """Store ``job``, whose input is the image file written at ``url``: held as it would
        be in Redis, deleted when its job ends (or at once, refused)."""
        held = replace(job, input_url=url, delete_input=True, input_file_held=True)
        return await self._store_or_discard(caller, held, url)

    def _body_job(
        self,
        caller: ClientSettings,
        kind: JobKind,
        token: str,
        size: int,
        output_room: int,
        idempotency: Idempotency | None,
    ) -> Submission:
        """A job of a body of ``size`` bytes, its input still to be placed (in Redis or a file)."""
        return Submission(
            kind,
            caller.name,
            token=token,
            client_id=caller.client_id,
            bytes=size,
            idempotency=idempotency,
            output_room=output_room,
        )

    async def reserve_held(self, caller: ClientSettings, token: str, size: int, output_room: int) -> None:
        """Reserve room in Redis for job ``token``'s input of ``size`` (declared, or the cap)
        and its output before the rest of the input is read (OverQuota when its client has
        none): a flood at its limit costs no more than each body's first read, and a client's
        bodies read at once never pass what it may hold there."""
        max_held = self.settings.default_max_held_bytes
        await run_in_threadpool(self.store.reserve_held, caller.name, token, size, max_held, output_room)

    async def release_held(self, caller: ClientSettings, token: str) -> None:
        """Drop job ``token``'s reservation: its request failed before the job was stored."""
        await run_in_threadpool(self.store.release_held, caller.name, token)

    async def upload(
        self,
        caller: ClientSettings,
        kind: JobKind,
        chunks: AsyncIterator[bytes],
        declared: int | None,
        keep_input: bool = False,
        key: str | None = None,
    ) -> Job:
        """Stream a file into the uploads store, then queue its job. A body the client's
        backlog quota cannot take is refused before a byte is stored when its length is
        declared, and deleted when it is not. The file is deleted when the job ends,
        unless ``keep_input``. With an Idempotency-Key, the body is hashed as it streams: a
        retry's file is deleted once submit.lua answers the first job."""
        await run_in_threadpool(self.limiter.admit, caller)
        if declared is not None:
            within_quota(caller, declared)
        token = new_token()
        limits = UploadLimits(caller.name, self.settings.default_max_uploads, caller.max_backlog_bytes or None)
        reservation = await run_in_threadpool(
            self.reservations.reserve, "stream", token, limits, declared or None, keys.UPLOAD_LEASE_S
        )
        try:
            url = f"{self.settings.uploads_url}/{token}.txt"
            options = self.settings.storage_options(url)
            digest = hashlib.sha256()
            size = await save_stream(
                hashed(reserved(chunks, reservation), digest), url, self.settings.max_upload_bytes, options
            )
            request = (kind.name.encode(), b"upload", digest.digest())
            idempotency = Idempotency.of(caller.name, key, *request) if key else None
            return await self._store_file(caller, kind, url, size, token, keep_input, idempotency)
        finally:
            await run_in_threadpool(reservation.release)

    async def url(self, caller: ClientSettings, kind: JobKind, url: str, key: str | None = None) -> Job:
        """Queue a job over a file already in an allowed store, named by URL."""
        idempotency = await self._idempotency(caller, key, kind.name.encode(), b"url", url.encode())
        # In a thread: resolving file:// links lstat's each folder of the path.
        url = await run_in_threadpool(check_allowed_url, url, self.settings.allowed_url_prefixes)
        await run_in_threadpool(self.limiter.admit, caller)
        size = await run_in_threadpool(self._size, url)
        return await self._store(caller, self._file_job(caller, kind, url, size, idempotency=idempotency))

    async def rerun(self, caller: ClientSettings, job: Job, key: str | None = None) -> Job:
        """Queue the job's input again as a new job of its kind: the file its URL names, or
        its bytes while they are kept (an image's go with its job's end). Admitted, costed
        and quota-checked as a new submission is."""
        kind = KINDS.get(job.kind)
        if kind is None:
            raise InputGone(f"job {job.token} is of an unknown kind ({job.kind!r}): it cannot run again")
        idempotency = await self._idempotency(caller, key, b"rerun", job.token.encode())
        if job.input_url is not None and kind.in_blocks:
            await run_in_threadpool(self.limiter.admit, caller)
            size = await run_in_threadpool(self._size, job.input_url)
            again = self._file_job(caller, kind, job.input_url, size, idempotency=idempotency)
            return await self._store(caller, again)
        gone = InputGone(f"the input of job {job.token} is no longer kept (it ended); submit it again")
        options = self.settings.storage_options(job.input_url or "")
        head = await run_in_threadpool(self.store.body_head, job, options)
        if not head:
            raise gone
        await run_in_threadpool(self.limiter.admit, caller)
        token = new_token()  # its room reserved before its input is read, as at the door
        await self.reserve_held(caller, token, job.bytes or 0, kind.output_room(head))
        try:
            data = await run_in_threadpool(self.store.body_input, job, options)
            if data is None:
                raise gone
            return await self._store_body(caller, kind, data, token, idempotency)
        except BaseException:
            await self.release_held(caller, token)
            raise

    async def start_direct_upload(
        self,
        caller: ClientSettings,
        kind: JobKind,
        size: int,
        part_bytes: int | None,
        keep_input: bool = False,
        idempotency: Idempotency | None = None,
    ) -> StartedUpload:
        """Admit a direct upload of ``size`` bytes (the rate counts it as the submission; its
        bytes are reserved against the backlog quota now, and checked again when it
        completes), and start it. A retry of a start (``idempotency`` seen before) is
        Replayed with the first answer."""
        direct = self.require_direct_uploads(kind)
        if idempotency is not None:
            await run_in_threadpool(self.store.check_idempotency, idempotency)
        if size > self.settings.max_upload_bytes:
            raise InputTooLarge(f"upload of {size} bytes is over the limit of {self.settings.max_upload_bytes} bytes")
        plan = plan_parts(size, part_bytes, self.settings.direct_upload_part_bytes)
        await run_in_threadpool(self.limiter.admit, caller)
        within_quota(caller, size)
        # Its bytes are reserved until it completes or expires (DirectUploads.finish ends it).
        upload_id = new_token()
        limits = UploadLimits(caller.name, self.settings.default_max_direct_uploads, caller.max_backlog_bytes or None)
        lease_s = self.settings.direct_upload_expiry_s
        reservation = await run_in_threadpool(self.reservations.reserve, "direct", upload_id, limits, size, lease_s)
        try:
            return await run_in_threadpool(direct.start, caller.owner, plan, keep_input, upload_id)
        except BaseException:
            await run_in_threadpool(reservation.release)
            raise

    async def complete_direct_upload(
        self, caller: ClientSettings, kind: JobKind, upload_id: str, etags: dict[int, str]
    ) -> Job:
        """Check and complete the caller's direct upload, then queue its job.

        Until S3 completes the upload, a refusal (parts not right, over the backlog quota)
        leaves it pending: the client may fix its parts, or wait, and call again. Once S3
        has completed it, the upload is done with whatever happens: a job refused then (a
        quota race since the check just before) deletes the file. The upload id is the
        call's idempotency key: retried after it queued the job, it answers that job."""
        direct = self.require_direct_uploads(kind)
        completed = await self._idempotency(caller, f"complete:{upload_id}", b"complete")
        try:
            upload = await run_in_threadpool(direct.claim, caller.owner, upload_id)
        except UploadNotFound:  # a call that completed it since the check above: its job
            await self._idempotency(caller, f"complete:{upload_id}", b"complete")
            raise
        try:
            await self._check_backlog(caller, upload.size)
            await run_in_threadpool(direct.complete, upload, etags)
        except BaseException:
            await run_in_threadpool(direct.release, upload)
            raise
        try:
            return await self._store_file(
                caller, kind, upload.url, upload.size, upload.token, upload.keep_input, completed
            )
        finally:
            await run_in_threadpool(direct.finish, upload)

    def require_direct_uploads(self, kind: JobKind) -> DirectUploads:
        """The direct uploads, or DirectUploadsUnavailable saying to stream ``kind``'s body instead."""
        if self.direct is None:
            why = (
                "direct uploads are turned off on this server"
                if not self.settings.direct_uploads
                else "direct uploads need the S3 uploads store, and this server keeps uploads in a local folder"
            )
            raise DirectUploadsUnavailable(f"{why}: send the file as the body of POST /{kind.name} instead")
        return self.direct

    async def _store_file(
        self,
        caller: ClientSettings,
        kind: JobKind,
        url: str,
        size: int,
        token: str,
        keep_input: bool,
        idempotency: Idempotency | None = None,
    ) -> Job:
        """Queue the job of a file we stored at ``url``; delete the file if the job is refused
        (or a retry's, answered with the first request's job) and, unless ``keep_input``,
        when the job ends."""
        job = self._file_job(caller, kind, url, size, token=token, delete_input=not keep_input, idempotency=idempotency)
        return await self._store_or_discard(caller, job, url)

    async def _store_or_discard(self, caller: ClientSettings, job: Submission, url: str) -> Job:
        """Store ``job``, whose input is the file we stored at ``url``: deleted when the job
        is refused (or is a retry's, answered with the first request's job)."""
        try:
            return await self._store(caller, job)
        except NotReplicated:
            raise  # stored all the same, and it may run: its file stays
        except BaseException:
            await run_in_threadpool(delete_file, url, self.settings.storage_options(url))
            raise

    async def _store(self, caller: ClientSettings, job: Submission) -> Job:
        within_quota(caller, job.bytes)
        return await run_in_threadpool(
            self.store.submit, job, caller.max_backlog_bytes or None, self.settings.default_max_held_bytes
        )

    async def remember(
        self, caller: ClientSettings, idempotency: Idempotency | None, answer: DirectUploadOut
    ) -> DirectUploadOut:
        """``answer``, kept for the retries of its request (or the answer a concurrent one
        kept first, Replayed), counted against what the caller holds in Redis."""
        if idempotency is not None:
            kept = answer.model_dump(mode="json")
            await run_in_threadpool(self.store.remember_answer, idempotency, kept, caller.name, answer.upload_id)
        return answer

    async def _idempotency(self, caller: ClientSettings, key: str | None, *request: bytes) -> Idempotency | None:
        """The request's idempotency, checked at once: a retry is answered before it costs
        an admission (Replayed), a key reused for another request refused."""
        if key is None:
            return None
        idempotency = Idempotency.of(caller.name, key, *request)
        await run_in_threadpool(self.store.check_idempotency, idempotency)
        return idempotency

    async def _check_backlog(self, caller: ClientSettings, size: int) -> None:
        within_quota(caller, size)
        limit = caller.max_backlog_bytes
        if not limit:
            return
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

    def _file_job(self, caller: ClientSettings, kind: JobKind, url: str, size: int, **given) -> Submission:
        """The submission of a job over the file at ``url``: costed by its blocks, the
        caller's (by name and registration); ``given``: the other Submission fields."""
        return Submission(
            kind, caller.name, self._cost(size), client_id=caller.client_id, bytes=size, input_url=url, **given
        )

    def _cost(self, size: int) -> int:
        """Blocks of a file of ``size`` bytes: what the job costs in the fair queue."""
        return max(1, math.ceil(size / self.settings.even_sum_block_bytes))

    def _size(self, url: str) -> int:
        """The file's size, to cost the job and count it against the backlog quota:
        InvalidInput when it cannot be read now, since a job admitted at a guessed size
        would bypass the quota. The reason stays in the server's log."""
        try:
            fs, path = fsspec.core.url_to_fs(url, **self.settings.storage_options(url))
            size = fs.info(path).get("size")
        except (OSError, ValueError) as exc:
            log.info("cannot stat %s to cost its job: %s", url, exc)
            raise InvalidInput("the file the URL names cannot be read: missing, or not readable here") from None
        if not isinstance(size, int):
            raise InvalidInput("the size of the file the URL names cannot be read; upload the file instead")
        return size


async def reserved(chunks: AsyncIterator[bytes], reservation: Reservation) -> AsyncIterator[bytes]:
    """``chunks``, each passed on once its bytes are reserved: past what it covers, the
    reservation grows by what the chunk needs and up to UPLOAD_STEP_BYTES ahead (OverQuota
    when the client has no room for the chunk), and its lease is renewed as the body streams."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > reservation.reserved:
            short = received - reservation.reserved
            await run_in_threadpool(reservation.grow, short, short + keys.UPLOAD_STEP_BYTES)
        elif reservation.renewal_due:
            await run_in_threadpool(reservation.grow, 0)
        yield chunk


def within_quota(caller: ClientSettings, size: int) -> None:
    """InputTooLarge for a job larger than the caller's whole backlog quota: waiting would not help."""
    limit = caller.max_backlog_bytes
    if limit and size > limit:
        raise InputTooLarge(
            f"the job's {size} bytes are over the backlog quota of {limit} bytes of client {caller.name!r}"
        )


async def hashed(chunks: AsyncIterator[bytes], digest) -> AsyncIterator[bytes]:
    """``chunks`` as they come, each added to ``digest`` (an Idempotency-Key's fingerprint of
    a streamed body)."""
    async for chunk in chunks:
        digest.update(chunk)
        yield chunk
