"""A job's life as server-sent events (``GET /tasks/{token}/events``), for bars that move
without polling: a ``progress`` event each time the status or the block progress changes,
then exactly one terminal event, ``finished`` or ``errored``, and the stream ends.

The stream samples the record: between two reads it waits on the job's ending
(backend/api/endings.py) for at most POLL_S, so an ending is sent at once and progress
within POLL_S. Each event's id orders the states a job passes through (``Position``): a
client that reconnects with ``Last-Event-ID`` (another API process will do: the state is
in Redis) gets only what is newer, and one that already had the terminal event gets a
204, which tells an EventSource to stop. Redis away mid-stream: the stream waits for it
and goes on. Streams are bounded per process and per client on it
(settings.max_event_streams, max_event_streams_per_client): past a bound a 429, as for an
over-quota client.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from redis import RedisError

from backend.api.endings import Endings
from backend.api.holds import Holds
from backend.api.lookup import job_status
from backend.core.exceptions import JobNotFound, OverQuota
from backend.core.job import FINAL, Job, JobStatus

log = logging.getLogger(__name__)

# The longest a change of progress waits to be sent (an ending is sent at once).
POLL_S = 0.5
# A comment line this often keeps proxies from closing a quiet stream.
KEEP_ALIVE_S = 15.0
# The id of the terminal event: after every other.
END = "end"
# A client is told to reconnect after this long (the `retry` field, in ms) ...
RETRY_MS = 1000
# ... and to try again after this long when the process serves all the streams it may.
RETRY_AFTER_S = 5


@dataclass(frozen=True, order=True)
class Position:
    """Where a job is in its life, in the order it gets there: attempt, then status
    (0 queued, 1 running), then blocks done. A requeued job goes back to 0 of its attempt,
    which its next claim (attempt + 1) passes."""

    attempt: int
    phase: int
    done: int

    @classmethod
    def of(cls, job: Job) -> "Position":
        running = job.status is JobStatus.received
        return cls(job.attempts, int(running), job.progress.done if running and job.progress else 0)

    @classmethod
    def parse(cls, text: str | None) -> "Position | None":
        """A Last-Event-ID as a position; None for none or one not ours (start over)."""
        try:
            attempt, phase, done = (int(part) for part in (text or "").split("."))
        except ValueError:
            return None
        return cls(attempt, phase, done)

    def __str__(self) -> str:
        return f"{self.attempt}.{self.phase}.{self.done}"


def check_room(streams: Holds, client: str) -> None:
    """OverQuota (429) when the process, or this client on it, has all the streams it may."""
    refusal = streams.refusal(client)
    if refusal is not None:
        raise OverQuota(f"event streams: {refusal}; try again", RETRY_AFTER_S)


def ended_before(last_event_id: str | None) -> bool:
    """The client had the terminal event: nothing more to send."""
    return last_event_id == END


async def job_events(
    token: str,
    read: Callable[[], Awaitable[Job]],
    endings: Endings,
    last_event_id: str | None,
    streams: Holds,
    client: str,
) -> AsyncIterator[str]:
    """The stream's text, event by event, until the terminal event (or the job is gone). A
    stream counts itself while its body runs (one whose client left before its body began
    never counts), so a burst may pass the bounds by a few."""
    with streams.hold(client):
        sent = Position.parse(last_event_id)
        quiet_since = time.monotonic()
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            started = time.monotonic()
            try:
                job = await endings.read_when_final(token, read, POLL_S, asyncio.Event().wait, client)
            except JobNotFound:  # expired meanwhile: nothing more will come
                return
            except RedisError as exc:  # Redis away: wait for it, the client keeps its stream
                log.info("event stream of %s: Redis unavailable (%s); trying again", token, exc)
                await asyncio.sleep(POLL_S)
                continue
            if job.status in FINAL:
                yield _event(END, job.status.value, job_status(job).model_dump_json(exclude_none=True))
                return
            position = Position.of(job)
            if sent is None or position > sent:
                yield _event(str(position), "progress", job_status(job).model_dump_json(exclude_none=True))
                sent, quiet_since = position, time.monotonic()
            elif time.monotonic() - quiet_since > KEEP_ALIVE_S:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            # A wait answered early without an ending (every waiter of Endings taken): pace the reads.
            await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - started)))


def _event(event_id: str, name: str, data: str) -> str:
    """One event; ``data`` is one line of JSON (a data field may not hold a line break)."""
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n"
