"""Cancels of the jobs this dispatcher runs: how a runner learns that its job was cancelled.

The cancel script (backend/jobs/lua/cancel.lua) ends the record at once and PUBLISHes the
token on ``keys.CANCELS``; the work already on the cluster is ours to stop. One thread
holds the subscription and sets the event of a job we run; a runner asks its event between
two waits on Dask (``BlockSum.run``'s ``cancelled``). Pub/sub misses what is published
while the subscription is down, so the heartbeat also reads the records of the jobs we run
(``check``): one that is final, and we did not end it, was ended by someone else.
"""

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import cast

from redis import Redis, RedisError

from backend.core.job import FINAL
from backend.jobs import keys
from backend.jobs.store import parse_record

log = logging.getLogger(__name__)

# The subscriber's read timeout: how soon it sees that the dispatcher stops.
LISTEN_S = 1.0
# Its pause before subscribing again after an error (Redis away).
RETRY_S = 1.0


class Cancels:
    """The jobs our loops run, each with an event set when it is cancelled."""

    def __init__(self, redis: Redis):
        self.redis = redis
        # {token: the events of our loops running it (one, unless it was handed back and claimed again)}
        self._running: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def watch(self, token: str) -> Iterator[None]:
        """Listen for the cancel of ``token`` while a loop of ours runs it (the block)."""
        event = threading.Event()
        with self._lock:
            self._running.setdefault(token, set()).add(event)
        try:
            yield
        finally:
            with self._lock:
                events = self._running[token]
                events.discard(event)
                if not events:
                    del self._running[token]

    def asker(self, token: str) -> Callable[[], bool]:
        """A callable that says whether the job, watched now, was cancelled (for a runner)."""

        def cancelled() -> bool:
            with self._lock:
                return any(event.is_set() for event in self._running.get(token, ()))

        return cancelled

    def heard(self, token: str) -> None:
        with self._lock:
            events = list(self._running.get(token, ()))
        for event in events:
            event.set()

    def check(self) -> None:
        """The heartbeat's look at the records of what we run: a final one was ended
        elsewhere (a cancel whose message we missed)."""
        with self._lock:
            tokens = sorted(self._running)
        if not tokens:
            return
        records = cast(list[bytes | None], self.redis.mget([keys.result(token) for token in tokens]))
        for token, raw in zip(tokens, records, strict=True):
            if raw is None or parse_record(raw, token).status in FINAL:
                self.heard(token)

    def listen(self, stop: threading.Event) -> None:
        """Hand out the cancels published on ``keys.CANCELS`` until ``stop`` is set."""
        while not stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(keys.CANCELS)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=LISTEN_S)
                    if message is not None and message["type"] == "message":
                        self.heard(message["data"].decode())
            except (RedisError, OSError) as exc:
                log.debug("the subscription to cancels failed (%s); subscribing again", exc)
                stop.wait(RETRY_S)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    pubsub.close()
