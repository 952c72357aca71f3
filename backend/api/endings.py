"""Job endings, for the requests that wait (``GET .../status?wait=S``, ``.../result?wait=S``).

Why: a client polling the status every 50 ms costs the API a dozen requests per image job,
and on a small machine answering them takes most of the API's CPU. A client that asks once
with ``?wait=`` is answered when the job ends. The final write (``finalize`` in
backend/jobs/lua/prelude.lua) PUBLISHes the job's token on ``keys.ENDINGS``; each API process
holds ONE subscription to that channel, not one per request, and a map from token to the
events of the requests waiting on that job.

Pub/sub delivers only to whoever listens at that moment, so a request registers its event
*before* it reads the record: an ending before the read shows in the record, an ending
after it sets the event. While the subscription is down (Redis restarting) endings are
missed and waits run to their timeout, never past it; the subscriber reconnects with
backoff and tells the outage in two log lines.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from backend.api.holds import Holds
from backend.core.job import FINAL, Job
from backend.core.waiting import FIRST_DELAY_S, MAX_DELAY_S, Outage
from backend.jobs import keys

log = logging.getLogger(__name__)

# After this long with no message the subscriber PINGs, and with no answer by the next time
# it reconnects: a connection dropped without a word (a failover, a NAT) looks like a quiet
# channel otherwise, and every wait would run to its timeout for good.
PING_EVERY_S = 5.0
# stop() gives the subscriber this long to close its connection.
STOP_WAIT_S = 2.0


class Endings:
    """One API process's subscription to job endings, and the requests waiting on them."""

    def __init__(self, redis_url: str, max_waiters: int, max_waiters_per_client: int):
        self.redis_url = redis_url
        # Requests waiting now, in all and per client. The total is read by /metrics from a thread.
        self.holds = Holds(max_waiters, max_waiters_per_client)
        # {token: events of the requests waiting on that job}; a token leaves with its last waiter.
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._outage = Outage(log, "Redis (the channel of job endings)", errors=(RedisError, OSError))
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._subscribe_forever(), name="job endings")

    async def stop(self) -> None:
        """Cancel the subscriber. The flag ends its loops too, should a cancellation be lost
        inside redis-py (Python 3.11's asyncio.wait_for can swallow one)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=STOP_WAIT_S)

    @property
    def tokens(self) -> int:
        """Jobs waited on now."""
        return len(self._waiters)

    @property
    def waiting(self) -> int:
        """Requests waiting now."""
        return self.holds.total

    async def read_when_final(
        self,
        token: str,
        read: Callable[[], Awaitable[Job]],
        timeout_s: float,
        gone: Callable[[], Awaitable],
        client: str,
    ) -> Job:
        """``read()`` once the job is final, or after ``timeout_s``, whichever comes first.

        Answers at once when the job is final already, or when this process has all the
        waiters it may, in all or of ``client`` (as without a wait). ``gone()`` ends the wait
        early: the client hung up. Errors of ``read`` (an unknown token, Redis down) go to
        the caller."""
        with self._waiter(token, client) as ended:
            job = await read()
            if ended is None or job.status in FINAL:
                return job
            await _first_of((ended.wait(), gone()), timeout_s)
            return await read()

    @contextlib.contextmanager
    def _waiter(self, token: str, client: str) -> Iterator[asyncio.Event | None]:
        """An event set when ``token``'s job ends, registered for the block; None when full."""
        if self.holds.refusal(client) is not None:
            yield None
            return
        event = asyncio.Event()
        self._waiters.setdefault(token, set()).add(event)
        try:
            with self.holds.hold(client):
                yield event
        finally:
            events = self._waiters[token]
            events.discard(event)
            if not events:
                del self._waiters[token]

    def _ended(self, token: str) -> None:
        for event in self._waiters.get(token, ()):
            event.set()

    async def _subscribe_forever(self) -> None:
        """Subscribe, hand out endings until the connection fails, back off, again."""
        delay = FIRST_DELAY_S
        while not self._stopping:
            # No socket timeout: every read below has its own, and with one redis-py writes
            # through asyncio.wait_for, which on Python 3.11 can swallow stop()'s cancellation.
            # No retries either: a failure comes here, to be told once and backed off.
            client = Redis.from_url(
                self.redis_url, socket_connect_timeout=2, socket_timeout=None, retry=Retry(NoBackoff(), 0)
            )
            pubsub = client.pubsub()
            try:
                if await self._subscribe(pubsub):
                    delay = FIRST_DELAY_S
                    with self._outage.watch():
                        await self._listen(pubsub)
            except Exception:  # a bug here must not end the subscription for the process's life
                log.exception("the subscription to job endings failed; subscribing again")
            finally:
                for close in (pubsub.aclose, client.aclose):
                    with contextlib.suppress(RedisError, OSError):
                        await close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)

    async def _subscribe(self, pubsub: PubSub) -> bool:
        with self._outage.watch():
            await pubsub.subscribe(keys.ENDINGS)
            return True
        return False

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while not self._stopping:
            message = await pubsub.get_message(timeout=PING_EVERY_S)
            if message is not None:  # an ending, or the answer to SUBSCRIBE or PING
                heard = loop.time()
                if message["type"] == "message":
                    self._ended(message["data"].decode())
            elif loop.time() - heard > 2 * PING_EVERY_S:
                raise RedisConnectionError(f"no answer to PING in {2 * PING_EVERY_S:.0f} s")
            else:
                await pubsub.ping()


async def _first_of(waits: tuple[Awaitable, ...], timeout_s: float) -> None:
    """Until the first of ``waits`` ends, or ``timeout_s``; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
