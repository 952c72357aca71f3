"""A caller that retries a submission too soon after a 429 is held for a moment first.

A client at its bound that keeps posting (a flood of 20 MiB images, say) would otherwise
cost the API, for every refusal, the key's lookup and the bound's check: Redis round
trips and about 2 ms of CPU taken from every other client's requests; and the cheaper a
refusal, the faster such a client sends the next. So for a moment after a 429
(``settings.refusal_cooldown_s``, or its Retry-After if shorter), the same caller's next
request on that route is held, before its key is looked up or its body read, until the
moment ends, and then checked for real: a flood gets one answer a moment per connection,
whatever it sends. A caller with ``WAITS_PER_CALLER`` requests held already (or a
process with ``MAX_WAITS``) gets the 429 at once instead, from memory.

The moment is short because Retry-After is a guess (a held-bytes refusal says 60 s; the
room may come back as soon as the client's queued jobs end): a client that retries early
finds out a moment later. One that waits as Retry-After says never meets it.

Keyed by what names the caller as sent (the API key, or the name in open mode), not by
the client it names: the check must come before the lookup it saves. An entry is made
only after that caller was accepted and then refused, so an unknown key never gets one.
"""

import asyncio
import math
import time
from collections import Counter
from typing import NamedTuple

from backend.core.exceptions import OverQuota

# A flood's requests held at once: by one caller (more connections than a client's
# uploads and waits need), and by one API process (each holds a connection and a task).
WAITS_PER_CALLER = 8
MAX_WAITS = 1000
# An API process remembers at most this many refusals: a caller refused past it goes the
# long way, as before. Entries last a moment, so reaching it needs that many at once.
MAX_ENTRIES = 10_000


class Cooldown(NamedTuple):
    since: float  # time.monotonic() of the refusal
    refused: OverQuota


class Cooldowns:
    """Who was just told to retry which route later. Single-threaded use: the event loop's."""

    def __init__(self, moment_s: float, waits_per_caller: int = WAITS_PER_CALLER, max_entries: int = MAX_ENTRIES):
        self.moment_s = moment_s
        self.waits_per_caller = waits_per_caller
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str | None], Cooldown] = {}
        self._waits: Counter[str | None] = Counter()

    @property
    def held(self) -> int:
        """Requests held now, waiting out their caller's moment."""
        return self._waits.total()

    async def wait_out(self, route: str, holder: str | None) -> None:
        """Return at once unless ``holder`` is cooling down on ``route``; then return when
        the moment is over (the request goes on to its real check), or refuse it now
        (OverQuota, as the refusal said, with the seconds left) if it may not be held."""
        entry = self._entries.get((route, holder))
        if entry is None:
            return
        retry_after_s = entry.refused.retry_after_s or 1
        elapsed = time.monotonic() - entry.since
        left = min(self.moment_s, retry_after_s) - elapsed
        if left <= 0:
            del self._entries[(route, holder)]
            return
        if self._waits[holder] >= self.waits_per_caller or self.held >= MAX_WAITS:
            raise OverQuota(str(entry.refused), max(1, math.ceil(retry_after_s - elapsed)))
        self._waits[holder] += 1
        try:
            await asyncio.sleep(left)
        finally:
            self._waits[holder] -= 1
            if not self._waits[holder]:
                del self._waits[holder]

    def start(self, route: str, holder: str | None, refused: OverQuota) -> None:
        """Remember that ``holder`` was told ``refused`` on ``route``."""
        now = time.monotonic()
        if len(self._entries) >= self.max_entries:
            self._entries = {key: e for key, e in self._entries.items() if now - e.since < self.moment_s}
            if len(self._entries) >= self.max_entries:
                return
        self._entries[(route, holder)] = Cooldown(now, refused)
