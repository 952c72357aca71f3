"""Direct uploads: the client PUTs an even-sum file's parts straight to S3.

The API starts an S3 multipart upload under the uploads prefix and hands the client one
presigned URL per part; the client uploads the parts (in parallel, from anywhere that
reaches S3) and calls complete with their ETags; the API then checks the parts against
S3's own listing, completes the upload and queues the job. The file never passes through
the API, and the API's credentials never leave it: a presigned URL allows one part of one
upload, until the upload's expiry.

Each pending upload is a record in Redis (backend/jobs/keys.py DIRECT_UPLOAD) and a member of
an index by expiry (DIRECT_UPLOADS). Every change of state is one atomic step: start (the
record and the index entry together), claim (one complete call at a time), finish, and
expire (one sweeper aborts an upload abandoned past its expiry).
"""

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import fsspec
from botocore.exceptions import BotoCoreError
from fsspec.asyn import sync
from redis import Redis

from backend.core.exceptions import StorageUnavailable, UploadBusy, UploadNotFound
from backend.core.job import new_token
from backend.core.settings import Settings
from backend.jobs import keys, scripts
from compute.defaults import MiB
from compute.errors import InvalidInput
from compute.files import delete_file

log = logging.getLogger(__name__)

# S3's rules for multipart uploads: every part but the last is 5 MiB to 5 GiB, at most
# 10,000 parts (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
S3_MIN_PART_BYTES = 5 * MiB
S3_MAX_PART_BYTES = 5 * 1024 * MiB
S3_MAX_PARTS = 10_000
# ListParts answers with at most this many parts a page.
LIST_PARTS_PAGE = 1000
# A 400 names at most this many problems (a client that lost every part need not hear of each).
MAX_PROBLEMS = 5


@dataclass(frozen=True)
class PartPlan:
    """How a file of ``size`` bytes is cut: ``count`` parts of ``part_bytes``, the last one shorter."""

    size: int
    part_bytes: int

    @property
    def count(self) -> int:
        return math.ceil(self.size / self.part_bytes)

    def part_size(self, number: int) -> int:
        """The size of part ``number`` (1-based)."""
        return min(self.part_bytes, self.size - (number - 1) * self.part_bytes)

    def describe(self) -> str:
        last = self.part_size(self.count)
        return f"{self.count} part(s) of {self.part_bytes} bytes, the last one {last} bytes"


def plan_parts(size: int, requested: int | None, default: int) -> PartPlan:
    """The parts of a file of ``size`` bytes: of the ``requested`` size (InvalidInput when S3
    would refuse it), else of the ``default`` size, made bigger if 10,000 parts are not enough."""
    if requested is None:
        return PartPlan(size, max(default, math.ceil(size / S3_MAX_PARTS / MiB) * MiB))
    if not S3_MIN_PART_BYTES <= requested <= S3_MAX_PART_BYTES:
        raise InvalidInput(f"part_size must be {S3_MIN_PART_BYTES} to {S3_MAX_PART_BYTES} bytes (S3's limits)")
    plan = PartPlan(size, requested)
    if plan.count > S3_MAX_PARTS:
        raise InvalidInput(
            f"too many parts: {size} bytes in parts of {requested} bytes are {plan.count} parts; S3 allows "
            f"{S3_MAX_PARTS}, so make part_size at least {math.ceil(size / S3_MAX_PARTS)} bytes"
        )
    return plan


@dataclass(frozen=True)
class PendingUpload:
    """One direct upload, as its Redis record holds it."""

    upload_id: str
    client: str  # its owner: the caller's registration id, or its name if it has none (ClientSettings.owner)
    token: str  # the job's token, chosen now: the file is <uploads_url>/<token>.txt
    path: str  # bucket/key, as s3fs names it
    s3_upload_id: str
    size: int
    part_bytes: int
    expires_at: float
    keep_input: bool = False  # the job does not delete the file when it ends

    @property
    def plan(self) -> PartPlan:
        return PartPlan(self.size, self.part_bytes)

    @property
    def url(self) -> str:
        return f"s3://{self.path}"

    def fields(self) -> dict[Any, str | int | float]:
        return {
            "client": self.client,
            "token": self.token,
            "path": self.path,
            "s3_upload_id": self.s3_upload_id,
            "size": self.size,
            "part_bytes": self.part_bytes,
            "expires_at": self.expires_at,
            "keep_input": int(self.keep_input),
        }

    @classmethod
    def from_fields(cls, upload_id: str, flat: list[bytes]) -> "PendingUpload":
        """From HGETALL's flat reply (field, value, field, value...), as the scripts return it."""
        fields = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        return cls(
            upload_id=upload_id,
            client=fields["client"],
            token=fields["token"],
            path=fields["path"],
            s3_upload_id=fields["s3_upload_id"],
            size=int(fields["size"]),
            part_bytes=int(fields["part_bytes"]),
            expires_at=float(fields["expires_at"]),
            keep_input=fields.get("keep_input") == "1",
        )


@dataclass(frozen=True)
class StartedUpload:
    """What the client gets: where to PUT each part, until when."""

    upload: PendingUpload
    urls: list[str]  # urls[i] takes part i + 1


class DirectUploads:
    """Pending direct uploads: S3 multipart uploads the API started and clients fill."""

    def __init__(self, settings: Settings, redis: Redis):
        self.settings = settings
        self.redis = redis
        options = settings.storage_options(settings.uploads_url)
        # SigV4 for the presigned URLs too: in us-east-1 botocore would sign them with SigV2,
        # which S3 refuses on buckets made since 2020, and which has no X-Amz-Expires.
        options["config_kwargs"] = {**options.get("config_kwargs", {}), "signature_version": "s3v4"}
        self.fs, self.root = fsspec.core.url_to_fs(settings.uploads_url, **options)
        self._claim = scripts.register(redis, "upload_claim")
        self._expire = scripts.register(redis, "upload_expire")

    # -- the client's two calls ---------------------------------------------------------------

    def start(self, client: str, plan: PartPlan, keep_input: bool, upload_id: str) -> StartedUpload:
        """Start the S3 multipart upload, record it, and presign a URL per part. Blocking.
        ``upload_id``: the id its reservation was made under (backend/jobs/reservations.py)."""
        token = new_token()
        path = f"{self.root}/{token}.txt"
        bucket, key = self._split(path)
        expires_in = self.settings.direct_upload_expiry_s
        with s3_errors(path):
            s3_upload_id = self.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key, ContentType="text/plain")[
                "UploadId"
            ]
            urls = self._presign(path, s3_upload_id, plan.count, expires_in)
        upload = PendingUpload(
            upload_id=upload_id,
            client=client,
            token=token,
            path=path,
            s3_upload_id=s3_upload_id,
            size=plan.size,
            part_bytes=plan.part_bytes,
            expires_at=round(time.time() + expires_in, 3),
            keep_input=keep_input,
        )
        record = keys.direct_upload(upload.upload_id)
        try:
            with self.redis.pipeline(transaction=True) as step:  # MULTI: the record and its index entry together
                step.hset(record, mapping=upload.fields())
                step.expire(record, expires_in + keys.DIRECT_UPLOAD_GRACE_S)
                step.zadd(keys.DIRECT_UPLOADS, {upload.upload_id: upload.expires_at})
                step.execute()
        except BaseException:
            try:
                self._abort(upload)  # not recorded, so no sweep would find it
            except (OSError, BotoCoreError):
                log.warning("could not abort the unrecorded upload %s: left to the start-up sweep", s3_upload_id)
            raise
        return StartedUpload(upload, urls)

    def claim(self, client: str, upload_id: str) -> PendingUpload:
        """Hold ``client``'s upload for one complete call: UploadNotFound (another client's,
        unknown, expired) or UploadBusy (another complete call holds it)."""
        reply = self._claim(
            keys=[keys.direct_upload(upload_id)], args=[client, time.time(), keys.DIRECT_UPLOAD_COMPLETE_MAX_S]
        )
        answer = reply[0].decode()
        if answer == "missing":
            raise UploadNotFound(f"no pending upload {upload_id} (unknown, completed, expired, or another client's)")
        if answer == "expired":
            expired_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(reply[1])))
            raise UploadNotFound(f"upload {upload_id} expired at {expired_at}; start a new upload")
        if answer == "busy":
            raise UploadBusy(f"another complete call of upload {upload_id} is running")
        return PendingUpload.from_fields(upload_id, reply[1:])

    def release(self, upload: PendingUpload) -> None:
        """Let go of a claim (the parts were not right yet, S3 failed): the upload is pending again."""
        self.redis.hdel(keys.direct_upload(upload.upload_id), "completing")  # one command; never recreates the record

    def finish(self, upload: PendingUpload) -> None:
        """The upload is done with (its job queued, or refused, or it expired): forget it,
        and release its reservation."""
        with self.redis.pipeline(transaction=True) as step:
            step.delete(keys.direct_upload(upload.upload_id))
            step.zrem(keys.DIRECT_UPLOADS, upload.upload_id)
            step.zrem(keys.uploads("direct", upload.client), f"{upload.upload_id} {upload.size}")
            step.execute()

    def complete(self, upload: PendingUpload, sent: dict[int, str]) -> None:
        """Check the parts S3 holds against the plan and the client's ETags ({part number:
        ETag}), then complete the upload. InvalidInput names what is wrong; UploadNotFound
        when S3 no longer knows the upload (aborted, or completed by a dead API's call)."""
        bucket, key = self._split(upload.path)
        with s3_errors(upload.path):
            try:
                listed = self._list_parts(bucket, key, upload.s3_upload_id)
            except FileNotFoundError:
                raise UploadNotFound(f"upload {upload.upload_id} is no longer on S3; start a new upload") from None
            check_parts(upload.plan, listed, sent)
            parts = [{"PartNumber": n, "ETag": listed[n][0]} for n in sorted(listed)]
            self.fs.call_s3(
                "complete_multipart_upload",
                Bucket=bucket,
                Key=key,
                UploadId=upload.s3_upload_id,
                MultipartUpload={"Parts": parts},
            )

    def _presign(self, path: str, s3_upload_id: str, count: int, expires_in: int) -> list[str]:
        """A presigned UploadPart URL for each of parts 1..count. Signing is local (no request),
        ~0.2 ms a URL: all in one trip to s3fs's event loop, which halves the time of one trip each."""

        async def sign_all() -> list[str]:
            return [
                await self.fs._url(
                    path, expires=expires_in, client_method="upload_part", UploadId=s3_upload_id, PartNumber=n
                )
                for n in range(1, count + 1)
            ]

        return sync(self.fs.loop, sign_all)

    def _list_parts(self, bucket: str, key: str, s3_upload_id: str) -> dict[int, tuple[str, int]]:
        """{part number: (ETag, size)} of every part S3 holds, page by page."""
        listed: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            page = self.fs.call_s3(
                "list_parts",
                Bucket=bucket,
                Key=key,
                UploadId=s3_upload_id,
                MaxParts=LIST_PARTS_PAGE,
                PartNumberMarker=marker,
            )
            for part in page.get("Parts", []):
                listed[part["PartNumber"]] = (part["ETag"], part["Size"])
            if not page.get("IsTruncated"):
                return listed
            marker = page["NextPartNumberMarker"]

    # -- the sweep ---------------------------------------------------------------------------

    def sweep_expired(self) -> int:
        """Abort every upload abandoned past its expiry, and forget it. Returns how many.
        One that S3 will not abort now stays recorded, for the next sweep to try again."""
        now = time.time()
        due = cast(list[bytes], self.redis.zrangebyscore(keys.DIRECT_UPLOADS, "-inf", now))
        aborted = 0
        for raw in due:
            upload_id = raw.decode()
            flat = self._expire(
                keys=[keys.direct_upload(upload_id), keys.DIRECT_UPLOADS],
                args=[upload_id, now, keys.DIRECT_UPLOAD_COMPLETE_MAX_S],
            )
            if not flat:  # None: a complete call holds it; []: its record had expired already
                continue
            upload = PendingUpload.from_fields(upload_id, flat)
            try:
                self._abort(upload)
            except (OSError, BotoCoreError) as exc:
                log.warning("could not abort the expired direct upload %s (next sweep tries again): %s", upload_id, exc)
                self.release(upload)
                continue
            self.finish(upload)
            log.info("aborted direct upload %s of client %s, abandoned past its expiry", upload_id, upload.client)
            aborted += 1
        return aborted

    def live_s3_upload_ids(self) -> set[str]:
        """The S3 upload ids of every recorded upload: what the start-up sweep of the
        uploads store must not abort, however old (they are the sweep's above)."""
        upload_ids = cast(list[bytes], self.redis.zrange(keys.DIRECT_UPLOADS, 0, -1))
        with self.redis.pipeline(transaction=False) as step:
            for upload_id in upload_ids:
                step.hget(keys.direct_upload(upload_id.decode()), "s3_upload_id")
            return {value.decode() for value in step.execute() if value}

    def _abort(self, upload: PendingUpload) -> None:
        """Abort the S3 upload; and when a dead API's complete call had completed it without
        queueing its job, delete the object."""
        bucket, key = self._split(upload.path)
        try:
            self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload.s3_upload_id)
        except FileNotFoundError:  # already gone: aborted by another sweep, or completed
            if not self.redis.exists(keys.result(upload.token)):
                delete_file(upload.url, self.settings.storage_options(upload.url))

    def _split(self, path: str) -> tuple[str, str]:
        bucket, _, key = path.partition("/")
        return bucket, key


def check_parts(plan: PartPlan, listed: dict[int, tuple[str, int]], sent: dict[int, str]) -> None:
    """InvalidInput naming the problems (the first MAX_PROBLEMS) of the parts S3 holds
    (``listed``, {number: (ETag, size)}) against the ``plan`` and the ETags the client
    ``sent``. S3's listing is the truth; the client's ETags must match it, so that what is
    completed is what the client uploaded."""
    problems = []
    for number in sorted(set(range(1, plan.count + 1)) | set(listed) | set(sent)):
        if number > plan.count:
            problems.append(f"too many parts: part {number} is not one of the {plan.describe()}")
        elif number not in listed:
            problems.append(f"part {number} is missing: it was never uploaded")
        elif number not in sent:
            problems.append(f"part {number} has no ETag in the request")
        elif listed[number][1] != plan.part_size(number):
            problems.append(f"part {number} has {listed[number][1]} bytes; it must have {plan.part_size(number)}")
        elif _unquoted(sent[number]) != _unquoted(listed[number][0]):
            problems.append(f"part {number}: ETag {sent[number]} is not the uploaded part's ({listed[number][0]})")
    if problems:
        more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        raise InvalidInput(f"the parts are not right ({plan.describe()}): {'; '.join(problems[:MAX_PROBLEMS])}{more}")


def _unquoted(etag: str) -> str:
    """S3 quotes ETags ("abc"); clients may or may not keep the quotes."""
    return etag.strip().strip('"')


@contextmanager
def s3_errors(path: str) -> Iterator[None]:
    """S3's failures, other than a missing upload or object, as StorageUnavailable: the
    operator's problem, which the client hears as 503."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, BotoCoreError) as exc:
        log.warning("the uploads store failed on %s: %s", path, exc)
        raise StorageUnavailable("the uploads store cannot take uploads right now; try again later") from exc
