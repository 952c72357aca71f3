"""Submissions refused with ``Retry-After`` are refused again, cheaply, for a moment.

A client at its bound that keeps posting (a flood of 20 MiB images, say) would otherwise
cost the API, for every refusal, the key's lookup and the bound's check: two Redis round
trips and two thread-pool hops, about 2 ms of CPU taken from every other client's
requests. For a moment after a 429 (``COOLDOWN_S``, or its Retry-After if shorter), the
same caller on the same route gets the same answer from memory, before its key is looked
up or its body read: a flood costs one real check a second per route and API process.
The moment is short because Retry-After is a guess (a held-bytes refusal says 60 s; the
room may come back as soon as the client's queued jobs end), and a client that retries
early should find out soon.

Keyed by what names the caller as sent (the API key, or the name in open mode), not by
the client it names: the check must come before the lookup it saves. An entry is made
only after that caller was accepted and then refused, so an unknown key never gets one.
"""

import math
import time
from typing import NamedTuple

from backend.core.exceptions import OverQuota

COOLDOWN_S = 1.0
# An API process remembers at most this many: a caller refused past it goes the long way,
# as before. Entries last a second, so reaching it needs that many refused at once.
MAX_ENTRIES = 10_000


class Cooldown(NamedTuple):
    since: float  # time.monotonic() of the refusal
    refused: OverQuota


class Cooldowns:
    """Who was just told to retry which route later. Single-threaded use: the event loop's."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str | None], Cooldown] = {}

    def check(self, route: str, holder: str | None) -> None:
        """OverQuota, as the refusal said but with the seconds left, while ``holder`` is
        cooling down on ``route``."""
        entry = self._entries.get((route, holder))
        if entry is None:
            return
        elapsed = time.monotonic() - entry.since
        retry_after_s = entry.refused.retry_after_s or 1
        if elapsed >= min(COOLDOWN_S, retry_after_s):
            del self._entries[(route, holder)]
            return
        raise OverQuota(str(entry.refused), max(1, math.ceil(retry_after_s - elapsed)))

    def start(self, route: str, holder: str | None, refused: OverQuota) -> None:
        """Remember that ``holder`` was told ``refused`` on ``route``."""
        now = time.monotonic()
        if len(self._entries) >= self.max_entries:
            self._entries = {key: e for key, e in self._entries.items() if now - e.since < COOLDOWN_S}
            if len(self._entries) >= self.max_entries:
                return
        self._entries[(route, holder)] = Cooldown(now, refused)
