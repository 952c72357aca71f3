"""Tidying the uploads store: uploads cut off by a crash (at start), and direct uploads
abandoned past their expiry (for the API's whole life)."""

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from backend.api.direct_uploads import DirectUploads
from backend.api.uploads import sweep_partial_uploads
from backend.core.settings import Settings

log = logging.getLogger(__name__)


def sweep_uploads(settings: Settings, direct: DirectUploads | None) -> None:
    """Best effort: a store we cannot sweep now is swept at the next start.

    Direct uploads first: those expired are aborted, and those pending (which clients may
    fill for hours) are kept from the sweep of uploads cut off by a crash. If Redis cannot
    say which are pending, the store is not swept at all rather than swept blind."""
    try:
        keep: set[str] = set()
        if direct is not None:
            direct.sweep_expired()
            keep = direct.live_s3_upload_ids()
        if removed := sweep_partial_uploads(
            settings.uploads_url, settings.storage_options(settings.uploads_url), settings.upload_stale_s, keep
        ):
            log.warning("removed %d upload(s) cut off by an earlier crash", removed)
    except Exception as exc:  # never a reason not to start: the next start sweeps again
        log.warning("could not sweep the uploads store %s: %s", settings.uploads_url, exc)


async def sweep_direct_uploads(direct: DirectUploads, every_s: float) -> None:
    """Abort direct uploads abandoned past their expiry, every ``every_s``, for the API's life.
    Every API process sweeps; the expire script lets exactly one of them take each upload."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await run_in_threadpool(direct.sweep_expired)
        except Exception as exc:  # Redis or S3 down for now: the next round tries again
            log.warning("could not sweep expired direct uploads: %s", exc)
