"""Admission control: a client over its submission rate is told to come back later.

The rate is a moving window per client, counted in Redis by the ``limits`` library, so
every API process shares one count. The backlog quota (input bytes queued or running)
is checked in the same atomic step that queues the job (JobStore.submit).

Both fail closed: while Redis is down the check raises RedisError, which the API answers
with 503, never by letting the request through unchecked.
"""

import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis import ConnectionPool

from backend.core.exceptions import OverQuota
from backend.jobs import keys
from backend.jobs.clients import ClientSettings
from backend.jobs.usage import Quota


def rate_item(rate: float) -> RateLimitItem:
    """``rate`` jobs a second as a moving window: N per second, or 1 per N seconds below 1/s."""
    if rate >= 1:
        return RateLimitItemPerSecond(round(rate))
    return RateLimitItemPerSecond(1, multiples=math.ceil(1 / rate))


class RateLimiter:
    """Per-client submission rates, counted in Redis."""

    def __init__(self, pool: ConnectionPool):
        storage = RedisStorage("redis://", connection_pool=pool, key_prefix=keys.RATE)
        self.limiter = MovingWindowRateLimiter(storage)

    def admit(self, client: ClientSettings) -> None:
        """Count one submission of ``client``; OverQuota (with Retry-After) when over its rate."""
        if client.rate <= 0:
            return
        item = rate_item(client.rate)
        if self.limiter.hit(item, client.name):
            return
        reset_at = self.limiter.get_window_stats(item, client.name).reset_time
        raise OverQuota(
            f"client {client.name!r} is over its rate of {client.rate:g} job submissions a second",
            retry_after_s=max(1, math.ceil(reset_at - time.time())),
        )

    def usage(self, client: ClientSettings) -> Quota:
        """``client``'s submissions in its moving window now, against its rate (GET /me).
        A client without a rate is not counted: 0 of no limit."""
        if client.rate <= 0:
            return Quota("rate", "submissions", 0, None, "per second")
        item = rate_item(client.rate)
        remaining = self.limiter.get_window_stats(item, client.name).remaining
        unit = "per second" if item.multiples == 1 else f"per {item.multiples} seconds"
        return Quota("rate", "submissions", item.amount - remaining, item.amount, unit)
