"""Uploads in flight, reserved against their client's backlog quota.

Without a reservation, each of a client's uploads could write up to the upload limit
(64 GiB) before the job's submit refused it over quota: a client could fill the uploads
store with bodies in progress. So an upload reserves its bytes before writing them: the
declared length at the start, or, for a body without one, ``UPLOAD_STEP_BYTES`` at a time
as it streams; a direct upload its whole size when it starts. The bytes reserved, the
client's jobs queued or running and its other uploads together must fit its backlog
quota, and a client may have only so many uploads of each kind at once (429 past either).

A reservation is a lease in ``uploads:<kind>:<client>`` (backend/jobs/keys.py), renewed
by each call: the upload's end removes it, and an upload whose API died stops counting
when its lease lapses, with nothing to release by hand and no counter to drift. Images on
their way into Redis reserve the same way, as kind ``image``, against the bytes their
client may hold there rather than its backlog quota (``JobStore.reserve_held``,
held_reserve.lua).
"""

import time
from dataclasses import dataclass, field

from redis import Redis
from redis.commands.core import Script

from backend.core.exceptions import OverQuota
from backend.jobs import keys, scripts


@dataclass(frozen=True)
class UploadLimits:
    """What one client may have in flight: uploads of the kind at once (0: no limit), and
    bytes with its backlog (its backlog quota; None: no limit)."""

    client: str
    max_uploads: int
    max_backlog_bytes: int | None


@dataclass
class Reservation:
    """One upload's reserved bytes; ``grow`` before writing past them, ``release`` at the end."""

    redis: Redis
    script: Script
    kind: str
    upload_id: str
    limits: UploadLimits
    lease_s: float
    reserved: int = 0
    renewed_at: float = field(default=-float("inf"))

    def grow(self, need: int, want: int | None = None) -> None:
        """Reserve ``need`` more bytes, and up to ``want`` if the quota has room (0: renew the
        lease); OverQuota when the client has not room for ``need``."""
        limits = self.limits
        answer, figure = self.script(
            args=[
                self.kind,
                limits.client,
                self.upload_id,
                self.reserved,
                need,
                max(need, want or 0),
                self.lease_s,
                limits.max_uploads,
                -1 if limits.max_backlog_bytes is None else limits.max_backlog_bytes,
            ]
        )
        if answer == 0:
            raise OverQuota(
                f"client {limits.client!r} has {figure} uploads in progress, its limit; start another when one ends",
                retry_after_s=keys.UPLOADS_RETRY_AFTER_S,
            )
        if answer == -1:
            raise OverQuota(
                f"client {limits.client!r} has {figure} bytes of jobs queued or running and uploads in progress; "
                f"{need} more would pass its backlog quota of {limits.max_backlog_bytes} bytes",
                retry_after_s=keys.BACKLOG_RETRY_AFTER_S,
            )
        self.reserved = int(figure)
        self.renewed_at = time.monotonic()

    @property
    def renewal_due(self) -> bool:
        """A quarter of the lease has passed since the last call: renew it (``grow(0)``)."""
        return time.monotonic() - self.renewed_at > self.lease_s / 4

    def release(self) -> None:
        """The upload ended (its job queued, or the upload refused or cut)."""
        if self.reserved:
            self.redis.zrem(keys.uploads(self.kind, self.limits.client), f"{self.upload_id} {self.reserved}")
            self.reserved = 0


class Reservations:
    """Makes reservations for the API."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._reserve = scripts.register(redis, "upload_reserve")

    def reserve(self, kind: str, upload_id: str, limits: UploadLimits, size: int | None, lease_s: float) -> Reservation:
        """A new upload's reservation of ``size`` bytes, or for a body of unknown size of a
        first step (as much of UPLOAD_STEP_BYTES as the quota has room for); OverQuota when
        it does not fit, or the client has its count of uploads of the kind in flight."""
        reservation = Reservation(self.redis, self._reserve, kind, upload_id, limits, lease_s)
        if size is None:
            reservation.grow(1, keys.UPLOAD_STEP_BYTES)
        else:
            reservation.grow(size)
        return reservation
