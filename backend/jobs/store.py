"""JobStore: job records, inputs and outputs in Redis, and the writes that end a job.

Each state change is ONE atomic Redis step (a Lua script of backend/lua), so a process
dying between two commands can never leave a record half-written or a counter wrong.
Only the attempt that holds a job may end it: the final write checks that the token is
in the writer's processing list and that the record names its dispatcher and attempt.
A run that lost its lease is told 'stale' and its result is dropped; the first final
write of the holder wins. An output comes as bytes, or as the key a worker task stored it
under (``Staged``): the holder's final write renames that key into place, a stale
attempt's deletes it.

Records are JSON (never pickle). Lua's cjson keeps 14 significant digits, enough for
epoch seconds with milliseconds; exact big integers (even-sum results) never pass
through cjson because results are stored as raw bytes under their own key.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from pydantic import ValidationError
from redis import Redis

from backend.core.exceptions import (
    IdempotencyKeyReused,
    InputTooLarge,
    JobEnded,
    JobNotFound,
    NotReplicated,
    OverQuota,
    Replayed,
    problems,
)
from backend.core.inputs import drop_input
from backend.core.job import Job, JobStatus, new_token, now_s
from backend.core.kinds import JobKind
from backend.core.settings import Settings
from backend.jobs import history, keys, scripts
from compute import files
from compute.redis_values import read_head, read_pieces, read_value, write_value


class EndResult(StrEnum):
    """What a final write did."""

    ok = "ok"  # written: the job is final now
    final = "final"  # the job had already ended; nothing written (first final write wins)
    stale = "stale"  # this attempt no longer holds the job (it lost its lease); dropped


@dataclass(frozen=True)
class Staged:
    """An output that a worker task wrote to Redis itself, at ``key`` (keys.staged)."""

    key: str


@dataclass(frozen=True)
class StoredFile:
    """An output that a worker task wrote as a file (compute.files), at ``url``: the final
    write keeps it for the result TTL, counted against its client, by its ``size``."""

    url: str
    size: int


@dataclass(frozen=True)
class Submission:
    """A job to store: who sends it, what it costs, and its input (bytes or a URL)."""

    kind: JobKind
    client: str = "anonymous"
    cost: int = 1
    input_bytes: bytes | None = None
    input_url: str | None = None
    token: str | None = None
    client_id: str | None = None
    # The input is a file the service stored for this job: deleted once the job ends.
    delete_input: bool = False
    # Makes a retry of the request answer the job the first made (keys.IDEMPOTENCY).
    idempotency: "Idempotency | None" = None
    # The most bytes its output may take: held for it in Redis beside its input, from its
    # submit to its end (its kind's Body.output_bound of the input).
    output_room: int = 0
    # The input (an image) is the file at ``input_url``, written before the submit and held
    # as it would be in Redis (settings.image_file_bytes): submit.lua takes it off
    # IMAGE_FILES, where it waits to be deleted should no record take it.
    input_file_held: bool = False
    # The input's size, as the record calls it (last: the name hides the type from here on).
    bytes: int = 0


@dataclass(frozen=True)
class Idempotency:
    """A request's Idempotency-Key, and what it asked: its kind and input, hashed."""

    key: str
    fingerprint: str

    @classmethod
    def of(cls, client: str, header: str, *request: bytes) -> "Idempotency":
        return cls.hashed(client, header, hashlib.sha256(b"\0".join(request)).hexdigest())

    @classmethod
    def hashed(cls, client: str, header: str, fingerprint: str) -> "Idempotency":
        """A key whose request was hashed as it streamed: ``fingerprint`` is what ``of``
        makes of the same parts (their SHA-256, joined by NUL bytes)."""
        return cls(keys.idempotency(client, hashlib.sha256(header.encode()).hexdigest()), fingerprint)


class JobStore:
    """Records, inputs and outputs of jobs; the API submits, dispatchers end them."""

    def __init__(self, redis: Redis, ttl_s: int, min_replicas: int = 0):
        self.redis = redis
        self.ttl_s = ttl_s
        # Replicas that must hold a submission before it is acknowledged (settings.redis_min_replicas).
        self.min_replicas = min_replicas
        self._submit = scripts.register(redis, "submit")
        self._finish = scripts.register(redis, "finish")
        self._progress = scripts.register(redis, "progress")
        self._requeue = scripts.register(redis, "requeue")
        self._annotate = scripts.register(redis, "annotate")
        self._cancel = scripts.register(redis, "cancel")
        self._held_reserve = scripts.register(redis, "held_reserve")
        self._remember = scripts.register(redis, "remember")
        self._forget_file = scripts.register(redis, "forget_file")

    # -- API side ---------------------------------------------------------------

    def submit(self, job: Submission, max_backlog_bytes: int | None = None, max_held_bytes: int = 0) -> Job:
        """Store a `requested` record (and its input) and queue its token, atomically.

        Raises OverQuota, and stores nothing, when the job would take its client's
        queued-or-running input bytes over ``max_backlog_bytes``, or the bytes it holds in
        Redis (inputs, what ended jobs keep, idempotency keys) over ``max_held_bytes`` (0: no limit; a client's
        own ``max_held_bytes`` field overrides it); InputTooLarge when the input alone is;
        Replayed (the job a retry answers) or IdempotencyKeyReused when its idempotency key
        was seen before; NotReplicated when fewer than ``min_replicas`` replicas confirmed it
        (it is stored, and may run)."""
        record = Job(
            token=job.token or new_token(),
            kind=job.kind.name,
            status=JobStatus.requested,
            client=job.client,
            client_id=job.client_id,
            lane=job.kind.lane,
            cost=job.cost,
            bytes=job.bytes,
            admitted_bytes=job.bytes,
            requested_at=now_s(),
            input_url=job.input_url,
            delete_input=job.delete_input or None,
        )
        idempotency = job.idempotency or Idempotency("", "")
        held_input = 2 if job.input_file_held else int(job.input_bytes is not None)
        args = [
            record.token,
            record.model_dump_json(exclude_none=True),
            held_input,
            job.client,
            job.bytes,
            job.output_room,
            -1 if max_backlog_bytes is None else max_backlog_bytes,
            job.kind.lane,
            max_held_bytes,
            history.member(record.requested_at or 0, record.token),
            history.member(now_s() - keys.HISTORY_TTL_S, ""),
            idempotency.key,
            idempotency.fingerprint,
        ]
        if not held_input:
            outcome, figure = self._submit_and_wait(args)
        else:
            outcome, figure = self._submit_reserved(job, record.token, args, max_held_bytes)
        if outcome == 2:
            raise Replayed({"token": figure.decode()})
        if outcome == 3:
            raise IdempotencyKeyReused(
                f"this Idempotency-Key made job {figure.decode()} for a different request; use a new key"
            )
        self._refuse_held(outcome, figure, job.client, job.bytes if held_input else 0)
        if not outcome:
            raise OverQuota(
                f"client {job.client!r} has {figure} bytes of jobs queued or running; this job's {job.bytes} "
                f"bytes would pass its backlog quota of {max_backlog_bytes} bytes",
                retry_after_s=keys.BACKLOG_RETRY_AFTER_S,
            )
        return record

    def _submit_reserved(self, job: Submission, token: str, args: list, max_held_bytes: int):
        """submit.lua with an input, sent only once room for it (and its output) is reserved:
        a refused input never reaches Redis, and a client's inputs in flight never pass what
        it may hold. (An input in a file was written by the caller, within the reservation
        the door made.)"""
        self.reserve_held(job.client, token, job.bytes, max_held_bytes, output_room=job.output_room)
        try:
            if job.input_bytes is not None:
                # In pieces, with its reservation's lease as TTL (submit.lua keeps it, or deletes it).
                head = keys.INPUT_HEAD_BYTES
                write_value(self.redis, keys.input_(token), job.input_bytes, keys.IMAGE_LEASE_S, head_bytes=head)
            return self._submit_and_wait(args)
        except BaseException:  # submit.lua may not have run, so not ended the reservation
            self.release_held(job.client, token)
            self.redis.delete(keys.input_(token))
            raise

    def hold_file(self, url: str, for_s: float) -> None:
        """List the image file at ``url`` to be deleted ``for_s`` seconds from now, unless a
        record takes it before (keys.IMAGE_FILES): listed before it is written, so that no
        crash leaves it for ever."""
        self.redis.zadd(keys.IMAGE_FILES, {url: now_s() + for_s})

    def files_due(self, batch: int) -> list[str]:
        """Up to ``batch`` image files whose time to be deleted has come (keys.IMAGE_FILES)."""
        due = self.redis.zrangebyscore(keys.IMAGE_FILES, "-inf", now_s(), start=0, num=batch)
        return [url.decode() for url in cast(list[bytes], due)]

    def forget_file(self, url: str) -> None:
        """Take a deleted image file off keys.IMAGE_FILES, unless a record took it since."""
        self._forget_file(args=[url, now_s()])

    def input_head(self, token: str) -> bytes:
        """The first keys.INPUT_HEAD_BYTES of job ``token``'s input (b"" when it has none)."""
        return read_head(self.redis, keys.input_(token))

    def reserve_held(self, client: str, token: str, size: int, max_held_bytes: int = 0, output_room: int = 0) -> None:
        """Reserve room in Redis for job ``token``'s input of ``size`` bytes and an output of
        ``output_room`` before they are read or sent, or raise as ``submit`` would
        (``max_held_bytes`` as there). Asked again with the same token, it renews the
        reservation; ``submit`` ends it (held_reserve.lua)."""
        answer, figure = self._held_reserve(args=[client, token, size, output_room, max_held_bytes, keys.IMAGE_LEASE_S])
        self._refuse_held(answer, figure, client, size)

    def release_held(self, client: str, token: str) -> None:
        """Drop job ``token``'s reservation: its request failed before ``submit`` stored it."""
        key = keys.uploads("image", client)
        mine = [member for member, _ in self.redis.zscan_iter(key, match=f"{token} *")]
        if mine:
            self.redis.zrem(key, *mine)

    def _refuse_held(self, answer: int, figure: int, client: str, stored: int) -> None:
        """Raise for held_reserve.lua's or submit.lua's refusal of the bytes a client holds."""
        if answer == -3:
            raise OverQuota(
                f"client {client!r} has {figure} images on their way into the job store, its limit; "
                "send another when one is stored",
                retry_after_s=keys.UPLOADS_RETRY_AFTER_S,
            )
        if answer == -2:
            raise InputTooLarge(
                f"the job's {stored} bytes, with room for its output, are over the {figure} bytes client "
                f"{client!r} may hold in Redis"
            )
        if answer == -1:
            raise OverQuota(
                f"client {client!r} holds {figure} bytes in Redis (inputs of its jobs, results kept for "
                f"{self.ttl_s} s, and images being sent); this job's {stored} bytes, with room for its output, "
                "would pass its limit: "
                "results free as they expire",
                retry_after_s=keys.HELD_RETRY_AFTER_S,
            )

    def _submit_and_wait(self, args: list) -> tuple[int, Any]:
        """The submit script, then, with ``min_replicas``, Redis `WAIT` for that many replicas
        to have it; NotReplicated past keys.REPLICA_WAIT_MS (the job is stored, not confirmed)."""
        if not self.min_replicas:
            return cast(tuple[int, Any], self._submit(args=args))
        # A pipeline holds one connection for both: WAIT counts the replicas that have the
        # writes of the connection it runs on.
        with self.redis.pipeline(transaction=False) as pipe:
            self._submit(args=args, client=pipe)
            pipe.wait(self.min_replicas, keys.REPLICA_WAIT_MS)
            (outcome, figure), replicas = pipe.execute()
        if outcome == 1 and replicas < self.min_replicas:
            raise NotReplicated(
                f"the job store (Redis) did not confirm the job on {self.min_replicas} replica(s) within "
                f"{keys.REPLICA_WAIT_MS} ms (failing over?); try again (this attempt may still run)"
            )
        return outcome, figure

    def check_idempotency(self, idempotency: Idempotency) -> None:
        """Raise what submit would for a key seen before (Replayed, IdempotencyKeyReused),
        so that a retry costs no admission; submit.lua decides, in its step. A key kept
        by remember_answer holds the whole answer instead of a token."""
        seen = self._bytes(idempotency.key)
        if seen is None:
            return
        first = json.loads(seen)
        if first["fingerprint"] != idempotency.fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used before for a different request; use a new key")
        raise Replayed(first["answer"] if "answer" in first else {"token": first["token"]})

    def remember_answer(self, idempotency: Idempotency, answer: dict, client: str, upload_id: str) -> None:
        """Keep the answer of a request that makes no job (direct upload ``upload_id``'s
        start) for its retries, counted against ``client``'s held bytes while it is kept
        (remember.lua), unless a concurrent request with the key kept one first: then that
        one is the answer (Replayed), and what this request made is left to expire."""
        value = json.dumps({"fingerprint": idempotency.fingerprint, "answer": answer})
        if not self._remember(args=[idempotency.key, value, client, upload_id]):
            self.check_idempotency(idempotency)

    def get(self, token: str) -> Job:
        raw = self._bytes(keys.result(token))
        if raw is None:
            raise JobNotFound(token)
        return parse_record(raw, token)

    def drop_input(self, job: Job, settings: Settings) -> None:
        """Delete ended ``job``'s uploaded input (backend.core.inputs), and once it is gone
        take the job off INPUTS_TO_DROP, where its final write listed it."""
        if drop_input(job, settings):
            self.redis.zrem(keys.INPUTS_TO_DROP, job.token)

    def left_inputs(self, grace_s: float, batch: int) -> list[Job]:
        """Up to ``batch`` ended jobs whose input is still listed ``grace_s`` after their
        final write: the process that wrote it died before it deleted the file, or the
        delete failed. A job whose record has expired is unlisted: nothing says where its
        file was (records outlive a day; a periodic check comes every few minutes)."""
        listed = self.redis.zrangebyscore(keys.INPUTS_TO_DROP, "-inf", now_s() - grace_s, start=0, num=batch)
        jobs = []
        for token in cast(list[bytes], listed):
            try:
                jobs.append(self.get(token.decode()))
            except JobNotFound:
                self.redis.zrem(keys.INPUTS_TO_DROP, token)
        return jobs

    def cancel(self, token: str, client: str | None) -> Job:
        """End the job `errored` and `cancelled`, releasing what it held, in one step; the
        cancelled record (again, for a job cancelled before). ``client``: the caller, who
        must own the job (None: anyone holding the token may). JobNotFound for an unknown
        token or another client's; JobEnded for a job that had ended on its own."""
        answer = self._cancel(args=[token, client or "", now_s(), self.ttl_s])
        outcome = answer[0].decode()
        if outcome == "missing":
            raise JobNotFound(token)
        job = parse_record(answer[1], token)
        if outcome == "ended":
            raise JobEnded(f"the job had already ended ({job.status}); there is nothing to cancel")
        return job

    def summary(self, token: str) -> Job:
        """The job's record, or once it expired its summary (kept days longer: GET /tasks);
        JobNotFound when both are gone."""
        raw = self._bytes(keys.result(token)) or self._bytes(keys.summary(token))
        if raw is None:
            raise JobNotFound(token)
        return parse_record(raw, token)

    def output(self, token: str) -> bytes | None:
        """The job's output, read in pieces (compute.redis_values): a client fetching
        its 20 MiB result many times at once makes Redis build no 20 MiB reply for each."""
        return read_value(self.redis, keys.output(token))

    def output_pieces(self, token: str) -> Iterator[bytes]:
        """The job's output a piece at a time (none when it is missing), for a reader that
        sends each on before it reads the next: it holds 1 MiB, not the output."""
        return read_pieces(self.redis, keys.output(token))

    def input(self, token: str) -> bytes | None:
        """The input that came through Redis (an image's bytes), None once it is gone."""
        return read_value(self.redis, keys.input_(token))

    def body_head(self, job: Job, storage_options: dict) -> bytes:
        """The first keys.INPUT_HEAD_BYTES of a body job's input wherever it is kept: its
        head field in Redis, or its file's (settings.image_file_bytes); b"" once it is gone."""
        if job.input_url is None:
            return self.input_head(job.token)
        return files.read_head(job.input_url, keys.INPUT_HEAD_BYTES, storage_options)

    def body_input(self, job: Job, storage_options: dict) -> bytes | None:
        """A body job's input wherever it is kept (Redis, or its file); None once it is gone."""
        if job.input_url is None:
            return self.input(job.token)
        return files.read_file(job.input_url, storage_options)

    def _bytes(self, key: str) -> bytes | None:
        # Our clients never set decode_responses: values come back as bytes.
        return cast(bytes | None, self.redis.get(key))

    # -- dispatcher side ----------------------------------------------------------

    def progress(self, job: Job, done: int, total: int) -> None:
        self._progress(args=[job.token, job.dispatcher or "", job.attempts, done, total])

    def finish(self, job: Job, output: bytes | Staged | StoredFile, **fields: Any) -> EndResult:
        """Store the result and mark `finished`, if this attempt still holds the job; a
        staged output is moved into place, or deleted when the attempt may not write."""
        return self._end(job, JobStatus.finished, output, fields)

    def fail(self, job: Job, error: str, **fields: Any) -> EndResult:
        """Mark `errored` with a readable message, if this attempt still holds the job."""
        return self._end(job, JobStatus.errored, b"", {**fields, "error": error})

    def requeue(self, job: Job, reason: str) -> bool:
        """Back to the front of its queue, if this attempt still holds it (a lost attempt)."""
        return self.requeue_token(job.token, job.dispatcher or "", reason, attempt=job.attempts)

    def requeue_token(self, token: str, dispatcher: str, reason: str, attempt: int = 0) -> bool:
        """Back to its queue, from ``dispatcher``'s processing list (any of its attempts)."""
        return bool(self._requeue(keys=[keys.processing(dispatcher)], args=[token, dispatcher, attempt, reason]))

    def annotate(self, token: str, **fields: Any) -> None:
        """Add figures to a record that exists, whatever its status."""
        self._annotate(args=[token, json.dumps(fields)])

    def _end(
        self, job: Job, status: JobStatus, output: bytes | Staged | StoredFile, fields: dict[str, Any]
    ) -> EndResult:
        fields.setdefault("finished_at", now_s())
        dispatcher = job.dispatcher or ""
        staged, data = ([output.key], b"") if isinstance(output, Staged) else ([], b"")
        if isinstance(output, StoredFile):  # finish.lua keeps it (keys.IMAGE_FILES) with the record
            fields.update(output_url=output.url, output_bytes=output.size)
        elif isinstance(output, bytes):
            data = output
        answer = self._finish(
            keys=[keys.processing(dispatcher), *staged],
            args=[job.token, dispatcher, job.attempts, status, json.dumps(fields), data, self.ttl_s],
        )
        return EndResult(answer.decode())


def parse_record(raw: bytes, token: str) -> Job:
    """The record as a Job; an unreadable one reads as an errored job that says so."""
    try:
        return Job.model_validate_json(raw)
    except ValidationError as exc:
        return Job(
            token=token,
            status=JobStatus.errored,
            error=f"job record is not readable ({problems(exc.errors(), 'record', True)}); resubmit the job",
        )
