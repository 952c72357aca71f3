"""JobStore: job records, inputs and outputs in Redis, and every state change on them.

Each state change is ONE atomic Redis step (a MULTI/EXEC or a Lua script), so a
dispatcher dying between two commands can never leave a record half-written, and two
dispatchers finishing the same token (a requeued job that was not really dead) agree on
one result: the first final write wins, later ones are no-ops.

Records are JSON (never pickle). Lua's cjson keeps 14 significant digits, enough for
epoch seconds with milliseconds; exact big integers (even-sum results) never pass
through cjson because results are stored as raw bytes under their own key.
"""

import json
from typing import cast

from pydantic import ValidationError
from redis import Redis

from backend import keys
from backend.exceptions import JobNotFound
from backend.job import Job, JobStatus, new_token, now_s

# KEYS: record, processing list. ARGV: token, now, dispatcher id.
# Returns the updated record, or a word when there is nothing to run.
_MARK_RECEIVED = """
local raw = redis.call('GET', KEYS[1])
if not raw then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  return 'missing'
end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' then return 'corrupt' end
if rec.status == 'finished' or rec.status == 'errored' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  return 'final'
end
rec.status = 'received'
rec.received_at = tonumber(ARGV[2])
rec.dispatcher = ARGV[3]
rec.attempts = (tonumber(rec.attempts) or 0) + 1
redis.call('SET', KEYS[1], cjson.encode(rec), 'KEEPTTL')
return cjson.encode(rec)
"""

# KEYS: record, output, input, processing list.
# ARGV: token, final status, JSON fields to merge, output bytes, ttl seconds.
# A record that is unreadable is replaced, so a corrupt job still ends `errored`.
_FINISH = """
local raw = redis.call('GET', KEYS[1])
local rec = {}
if raw then
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' then rec = decoded end
end
if rec.status == 'finished' or rec.status == 'errored' then
  redis.call('LREM', KEYS[4], 0, ARGV[1])
  return 0
end
for k, v in pairs(cjson.decode(ARGV[3])) do rec[k] = v end
rec.token = ARGV[1]
rec.status = ARGV[2]
redis.call('SET', KEYS[1], cjson.encode(rec), 'EX', ARGV[5])
if ARGV[2] == 'finished' then
  redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
end
redis.call('DEL', KEYS[3])
redis.call('LREM', KEYS[4], 0, ARGV[1])
return 1
"""

# KEYS: record. ARGV: done, total. Only a running job shows progress.
_PROGRESS = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' or rec.status ~= 'received' then return 0 end
rec.progress = {done = tonumber(ARGV[1]), total = tonumber(ARGV[2])}
redis.call('SET', KEYS[1], cjson.encode(rec), 'KEEPTTL')
return 1
"""


class JobStore:
    """Records, inputs and outputs of jobs; the API writes, dispatchers transition."""

    def __init__(self, redis: Redis, ttl_s: int):
        self.redis = redis
        self.ttl_s = ttl_s
        self._mark_received = redis.register_script(_MARK_RECEIVED)
        self._finish = redis.register_script(_FINISH)
        self._progress = redis.register_script(_PROGRESS)

    # -- API side ---------------------------------------------------------------

    def submit(
        self,
        kind: str,
        client: str = "anonymous",
        *,
        input_bytes: bytes | None = None,
        input_url: str | None = None,
        token: str | None = None,
    ) -> Job:
        """Store a `requested` record (and its input) and queue its token, atomically."""
        job = Job(
            token=token or new_token(),
            kind=kind,
            status=JobStatus.requested,
            client=client,
            requested_at=now_s(),
            input_url=input_url,
        )
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.result(job.token), job.model_dump_json(exclude_none=True), ex=self.ttl_s)
            if input_bytes is not None:
                pipe.set(keys.input_(job.token), input_bytes, ex=self.ttl_s)
            pipe.lpush(keys.TASKS, job.token)
            pipe.execute()
        return job

    def get(self, token: str) -> Job:
        raw = self._bytes(keys.result(token))
        if raw is None:
            raise JobNotFound(token)
        return parse_record(raw, token)

    def output(self, token: str) -> bytes | None:
        return self._bytes(keys.output(token))

    def input(self, token: str) -> bytes | None:
        return self._bytes(keys.input_(token))

    def _bytes(self, key: str) -> bytes | None:
        # Our clients never set decode_responses: values come back as bytes.
        return cast(bytes | None, self.redis.get(key))

    # -- dispatcher side ----------------------------------------------------------

    def mark_received(self, token: str, dispatcher: str) -> Job | None:
        """Move a claimed token to `received`; None when there is nothing to run.

        A token whose record expired, or that another dispatcher already finished,
        is dropped from the processing list. A corrupt record is failed here.
        """
        answer = self._mark_received(
            keys=[keys.result(token), keys.processing(dispatcher)],
            args=[token, now_s(), dispatcher],
        )
        if answer == b"corrupt":
            self.fail(token, dispatcher, "job record is not readable JSON; resubmit the job")
            return None
        if answer in (b"missing", b"final"):
            return None
        return parse_record(answer, token)

    def progress(self, token: str, done: int, total: int) -> None:
        self._progress(keys=[keys.result(token)], args=[done, total])

    def finish(self, token: str, dispatcher: str, output: bytes, **fields) -> bool:
        """Store the result and mark `finished`. False when the job had already ended."""
        return self._end(token, dispatcher, JobStatus.finished, output, fields)

    def fail(self, token: str, dispatcher: str, error: str, **fields) -> bool:
        """Mark `errored` with a readable message. False when the job had already ended."""
        return self._end(token, dispatcher, JobStatus.errored, b"", {**fields, "error": error})

    def _end(self, token, dispatcher, status, output, fields) -> bool:
        fields.setdefault("finished_at", now_s())
        done = self._finish(
            keys=[
                keys.result(token),
                keys.output(token),
                keys.input_(token),
                keys.processing(dispatcher),
            ],
            args=[token, status, json.dumps(fields), output, self.ttl_s],
        )
        return bool(done)


def parse_record(raw: bytes, token: str) -> Job:
    """The record as a Job; an unreadable one reads as an errored job that says so."""
    try:
        return Job.model_validate_json(raw)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "record"
        return Job(
            token=token,
            status=JobStatus.errored,
            error=f"job record is not readable ({where}: {problem['msg']}); resubmit the job",
        )
