"""Every Redis key name and every time constant of the job contract, in one place.

The first names are the original system's contract: producers written for it LPUSH a
token on the list ``tasks`` and write the record ``result:<token>``. Everything else is
how dispatchers share the cluster fairly between clients (docs/architecture.md has the
life of a job through these keys).

Keys built from a client name or a lane are built inside Lua scripts too; that is fine on
a single Redis node (not Redis Cluster), which is what we run.
"""

from compute.defaults import MiB

# -- the original contract ------------------------------------------------------------------
# The intake: tokens LPUSHed by the API (or by any producer of the original system).
# Dispatchers route them from here into per-client queues before they pick.
TASKS = "tasks"
# The job record, a JSON object: {"token", "kind", "status", "client", timestamps...}.
RESULT = "result:{token}"
# Raw result bytes (a PNG, or the even-sum JSON): kept apart so the record stays small.
# This and the next two are hashes of raw pieces (compute.redis_values: a 20 MiB string
# would hold Redis's one thread 10-34 ms as it is made).
OUTPUT = "result:{token}:output"
# Raw input bytes of jobs small enough to travel through Redis (images). Sent by the API
# before its job's record, with its reservation's lease as TTL; submit.lua keeps it (no TTL
# while the job lives: UNTIL_FINAL) or deletes it.
INPUT = "input:{token}"
# An input's first bytes, kept apart in its hash (compute.redis_values.read_head): a
# runner that needs only them (an image's size, for its pool) reads no piece.
INPUT_HEAD_BYTES = 64
# Raw result bytes that a worker task wrote to Redis itself (the image job,
# compute/stored.py), one key per attempt: the final write of the attempt that holds the
# job renames it to OUTPUT; a stale attempt's is deleted, so it can never land.
# Counted in HELD_BYTES before it exists: its input counts twice, itself and room for this
# output (the worker stores it with plain HSETs: its ACL on AWS allows no script); the
# final write counts the output kept at its own cost.
STAGED = "staged:{token}:{dispatcher}:{attempt}"

# -- fair queues (one per lane and client) ---------------------------------------------------
# A client's waiting tokens in a lane, oldest first.
QUEUE = "queue:{lane}:{client}"
# The clients with waiting work in a lane, in deficit-round-robin order (a list).
RING = "ring:{lane}"
# Hash client -> deficit (in blocks) of the lane's round robin; field "@visit" names the
# client whose turn is in progress.
DEFICIT = "deficit:{lane}"
# Hash client -> jobs of the lane held in processing lists (claimed, not final).
RUNNING = "running:{lane}"
# Hash client -> blocks of the lane queued or running (an image job is one block).
BACKLOG_BLOCKS = "backlog-blocks:{lane}"
# Hash client -> input bytes of the client's jobs queued or running (the backlog quota):
# each job's `admitted_bytes`, added by submit.lua and subtracted once by its final write.
BACKLOG_BYTES = "backlog-bytes"
# Hash client -> bytes the client holds in Redis, as Redis' allocator counts them (MEMORY
# USAGE SAMPLES 0): inputs of its live jobs, each with room for the output a worker stores
# (STAGED) beside it, as large as its kind's bound on it (compute.png.output_bound: an
# image's shuffle can take far more than its PNG), the record's `held_bytes`, added by
# submit.lua and subtracted by the final write (which deletes the input); and what its
# ended jobs keep for the result TTL: the output at its own cost, the record, and the
# entry that tracks them (added by the final write, subtracted when HELD_OUTPUTS says they
# expired). Records count too: 50 small jobs a second would otherwise keep 4 million
# records, some 3 GB, a day.
HELD_BYTES = "held-bytes"
# Sorted set "<id> <client> <bytes>" -> expiry (epoch s) of what counts in HELD_BYTES past
# a job's end: an ended job's output and record (id: its token), an idempotency key (id:
# "<token>/key"). submit.lua and doctor release the ones past their expiry, so each counts
# against its client exactly as long as Redis keeps it.
HELD_OUTPUTS = "held-outputs"
# What one entry of HELD_OUTPUTS costs Redis (measured: 158 bytes each over a million).
HELD_ENTRY_BYTES = 160
# Hash client -> the bytes of its entries in HELD_OUTPUTS, kept with them by the final
# write and the release: what the doctor's periodic check counts in HELD_BYTES, since
# reading every entry in one step stops Redis for seconds once there are millions (3.3 s a
# million, measured: a day of images at 12 a second).
HELD_OUTPUT_BYTES = "held-output-bytes"
# ... and the entries are read, to recompute those sums, only while there are at most this
# many (about 65 ms), or when `spacetime doctor` is run by hand.
DOCTOR_OUTPUTS_MAX = 20_000
# Sorted set token -> time of its final write, of every ended job whose uploaded input is
# to be deleted (added by the final write; removed once the file is gone). The process
# that wrote the end deletes the file at once; one that died first leaves the token here,
# for a dispatcher's heartbeat to delete it INPUT_DROP_GRACE_S later (JobStore.left_inputs).
INPUTS_TO_DROP = "inputs-to-drop"
# Sorted set URL -> when to delete it, of image files in the uploads store (settings.
# image_file_bytes) that are not an input of a live job: an input written before its
# submit (at its lease's end, unless submit.lua takes it off: its record owns it then, and
# its end deletes it as any upload's), and an attempt's output (STAGED_TTL_S after its
# task, unless the final write keeps it: then at its record's expiry). A dispatcher's
# heartbeat deletes those due, IMAGE_FILES_BATCH a beat (JobStore.files_due). So no file
# outlives what its client's held bytes count, and no crash leaves one for ever.
IMAGE_FILES = "image-files"
IMAGE_FILES_BATCH = 200
# Dispatchers BLPOP this to sleep until there may be work in the lane (a job arrived, or
# a running job ended and a capped client may go on). A marker carries nothing: the pick
# script is the truth, so lost or extra markers are harmless.
WAKE = "wake:{lane}"
# At most this many markers wait in a wake list: enough to wake every idle job loop.
WAKE_MAX = 64

# Start-time fair queueing of block tasks between clients (backend/jobs/fairshare.py): the
# virtual time of a lane (the start tag of the latest block that finished) ...
VTIME = "vtime:{lane}"
# ... and hash client -> the finish tag of its latest block.
VFINISH = "vfinish:{lane}"

# -- dispatchers (the reliable queue) --------------------------------------------------------
# A dispatcher's in-flight tokens: a token is always in exactly one list (tasks, a client
# queue, or one processing list), moved by single atomic steps.
PROCESSING = "processing:{dispatcher}"
# Exists while the dispatcher is alive; expires LEASE_S after its last renewal.
LEASE = "lease:{dispatcher}"
# Sorted set dispatcher id -> last heartbeat (epoch ms). No TTL: the reaper walks it, and
# an outage of every dispatcher must not make their processing lists unfindable.
DISPATCHERS = "dispatchers"
# Hash "<lane>|<client>" -> block tasks a dispatcher has in flight on the cluster now,
# rewritten by its heartbeat and gone with its lease.
IN_FLIGHT = "in-flight:{dispatcher}"

# -- clients (identity, weights, quotas) -----------------------------------------------------
# Set of registered client names.
CLIENTS = "clients"
# Prefix of the submission-rate counters, written by the `limits` library (backend/api/admission.py):
# a list "rate:LIMITER/<client>/<n>/<seconds>/second" per client, expiring with its window.
RATE = "rate"
# Hash of one registered client: weight, max_running_bulk, rate, max_backlog_bytes, client_id
# (its registration's random id), admin (1: an operator), key_sha256.
CLIENT = "client:{name}"
# String sha256(api key) -> "<client name> <registration id>" (the name alone for keys made before ids).
API_KEY = "api-key:{sha256}"

# -- direct uploads (POST /even-sum/uploads) -------------------------------------------------
# Hash of one pending direct upload: client, token, path (bucket/key), s3_upload_id, size,
# part_bytes, parts, expires_at, and `completing` (epoch s) while a complete call holds it.
# Lives DIRECT_UPLOAD_GRACE_S past its expiry, so that the sweep still finds what to abort.
DIRECT_UPLOAD = "direct-upload:{upload_id}"
# Sorted set upload id -> expires_at (epoch s): what the sweep walks, and what the start-up
# sweep of the uploads store must leave alone. Emptied by complete calls and by the sweep.
DIRECT_UPLOADS = "direct-uploads"

# -- uploads in flight (backend/jobs/reservations.py) -------------------------------------------
# Sorted set "<upload id> <bytes>" -> lease expiry (epoch s): a client's uploads in flight
# of one kind (`stream`: bodies being written to the uploads store; `direct`: pending
# direct uploads), each with the bytes it reserved against the client's backlog quota.
# upload_reserve.lua adds and grows a member (renewing its lease); the upload's end removes
# it; a lapsed lease (an API that died mid-upload) stops counting at the next reservation.
# Kind `image`: images on their way into Redis, "<token> <bytes> <output room>", reserved by
# held_reserve.lua against the bytes the client may hold there, turned into held bytes or
# dropped by submit.lua; so a client's concurrent submits cannot all push their image into
# Redis' buffers. The doctor drops lapsed leases of every kind.
# The key expires with its longest lease.
UPLOADS = "uploads:{kind}:{client}"

# -- job endings (GET .../status?wait=) ------------------------------------------------------
# A pub/sub channel, not a key (nothing is stored): the final write PUBLISHes the job's token
# on it, and each API process's one subscription wakes the status requests waiting on that
# job (backend/api/endings.py). An ending published while nobody listens is simply missed.
ENDINGS = "endings"

# -- the doctor (backend/jobs/doctor.py) ----------------------------------------------------
# Held by the dispatcher whose heartbeat runs the periodic check, for doctor_interval_s:
# one dispatcher checks per interval, however many there are.
DOCTOR_LOCK = "doctor-lock"

# -- job control (DELETE /tasks/<token>) -----------------------------------------------------
# A pub/sub channel, not a key: the cancel script PUBLISHes the token of a job it ended while
# a dispatcher ran it, so that the dispatcher stops its work on the cluster at once
# (backend/dispatch/cancels.py; its heartbeat finds a missed message in the record).
CANCELS = "cancels"

# -- safe retries (the Idempotency-Key header) ----------------------------------------------
# JSON {"fingerprint", "token"}: the job that the first request with this key made, and a
# hash of what that request asked (kind and input), so that a retry answers the same job and
# a different request with the key is refused. Written by submit.lua with the job, in its
# step; <sha256> is the key's hash (any length and characters, one size in Redis). A direct
# upload's complete call uses "complete:<upload_id>" as its key: a retry answers its job.
# One made with a job counts against its client's held bytes while it is kept
# (HELD_OUTPUTS entry "<token>/key"): a day at the rate limit would be 4 million keys.
IDEMPOTENCY = "idempotency:{client}:{sha256}"

# -- job history (GET /tasks) ----------------------------------------------------------------
# Sorted set of a client's jobs, newest last: every score is 0 and each member is
# "<requested_at in ms, 13 digits>:<token>", so members sort by submit time (then token)
# and a page's cursor is a member (backend/jobs/history.py). Written by submit.lua, which
# trims what is older than HISTORY_TTL_S, and past HISTORY_MAX the oldest with their
# summaries; the key expires HISTORY_TTL_S after the last submit.
JOBS = "jobs:{client}"
# A job's compact summary (JSON: kind, status, times, error, timings), written at submit and
# by the final write: what GET /tasks shows of a job whose record has expired.
SUMMARY = "summary:{token}"

# -- the operator's overview (GET /overview, backend/jobs/overview.py) -------------------------
# Hash client -> seconds its tasks of the lane computed, in the minute (epoch s // 60) their
# compute ended: the dispatcher adds a job's tasks (its trace, the tasks' own start and stop
# from Dask) after the job ends. Per minute, so that a window's share is a sum of buckets and
# old minutes expire by themselves.
BLOCK_SECONDS = "block-seconds:{lane}:{minute}"
# The last errored jobs, newest first, JSON {"token", "client", "kind", "error", "ended_at"}:
# written by the final write (prelude.lua `finalize`), trimmed to FAILURES_MAX. A cancelled
# job is not a failure and is left out.
FAILURES = "failures"
# Sorted set "<token> <lead_s>" -> ended_at (epoch s, Redis clock) of a client's jobs that
# finished in the last LEAD_TIMES_WINDOW_S, at most LEAD_TIMES_MAX: written by the final
# write of a finished job, trimmed by each write, expiring with the window.
LEAD_TIMES = "lead-times:{client}"
# Sorted set client -> its latest finish (epoch s): whose LEAD_TIMES to read, without a SCAN.
LEAD_TIME_CLIENTS = "lead-time-clients"

# -- metrics ---------------------------------------------------------------------------------
# Hash of job counters and time sums written by dispatchers, read by GET /metrics.
METRICS = "metrics"

# Keys of a live job (queued or running) that have no TTL until its final write gives the
# record one and deletes the input: a record that expired while its job waited would lose
# the job and leak its client's counters. tests/test_reliability.py checks that
# every one left after the jobs end has a TTL.
UNTIL_FINAL = (RESULT, INPUT)

# Keys that live without a TTL, on purpose: configuration (clients and their keys), and the
# reliable queue's own lists, which exist only while they hold tokens and are emptied by
# the pick, the final write or the reaper (wake lists: by BLPOP, and never over WAKE_MAX).
# tests/test_reliability.py holds every other key to having a TTL, during a job as well
# as after it.
WITHOUT_TTL = (
    TASKS,
    "queue:*",
    "ring:*",
    "deficit:*",
    "running:*",
    "backlog-blocks:*",
    BACKLOG_BYTES,
    HELD_BYTES,
    HELD_OUTPUTS,
    HELD_OUTPUT_BYTES,
    INPUTS_TO_DROP,
    IMAGE_FILES,
    "wake:*",
    "processing:*",
    DISPATCHERS,
    CLIENTS,
    "client:*",
    "api-key:*",
    DIRECT_UPLOADS,
)

# -- times -----------------------------------------------------------------------------------
# A request retried within this long with the same Idempotency-Key answers the job the first
# made: a day, as the job services clients know (Stripe's, for one).
IDEMPOTENCY_TTL_S = 24 * 3600
# A job stays listed (GET /tasks) this long after its submit, its summary as long after its
# end: a week, so that last week's jobs, and their reports, can still be found.
HISTORY_TTL_S = 7 * 24 * 3600
# ... and at most this many of a client's newest jobs: rate and TTL alone would let one
# client keep 30 million (50 a second for a week), gigabytes of Redis. 10,000 jobs take
# 6-8 MiB of list and summaries (6.2 MiB measured with summaries of finished jobs).
HISTORY_MAX = 10_000
# How long an idle job loop sleeps on its wake list before it looks again anyway (work
# pushed straight on `tasks` by an old producer wakes nobody).
CLAIM_TIMEOUT_S = 1.0
# A dispatcher renews its lease this many times per lease period, so one missed
# renewal (a slow Redis round trip) does not make it look dead.
LEASE_RENEWALS_PER_PERIOD = 3
# How long a submission waits for its replicas (`WAIT`, with redis_min_replicas): a
# replica is normally milliseconds behind, and this stays well under the API's 5 s
# socket timeout. Past it the client gets 503 instead of a token a failover could lose.
REPLICA_WAIT_MS = 1000
# Job counters live as long as jobs keep coming; Prometheus reads a reset as a restart.
METRICS_TTL_S = 30 * 24 * 3600
# Retry-After of a client over its backlog quota: its own jobs must end first, and
# asking again every few seconds is often enough without adding load.
BACKLOG_RETRY_AFTER_S = 5
# The fair-queueing tags outlive any busy period; when they expire (a day idle), every
# client starts again from zero, which is fair too.
FAIR_TAGS_TTL_S = 24 * 3600
# A pending upload's record outlives its expiry by this much: long enough that an API down
# for hours still finds, when it comes back, the S3 uploads to abort (the bucket's lifecycle
# rule aborts what is left after a day anyway).
DIRECT_UPLOAD_GRACE_S = 24 * 3600
# A complete call holding an upload longer than this has died with its API: the upload may
# be claimed again (a retried complete call, or the sweep). CompleteMultipartUpload takes
# seconds, even for 10,000 parts.
DIRECT_UPLOAD_COMPLETE_MAX_S = 600
# A staged output is renamed or deleted by its attempt's final write milliseconds after the
# worker wrote it; this only bounds what an attempt lost in between leaves behind.
STAGED_TTL_S = 600
# An ended job's input is deleted by the process that ended it, within this; past it,
# that process died first, and a dispatcher's heartbeat deletes it (at most
# INPUT_DROP_BATCH a beat).
INPUT_DROP_GRACE_S = 60
INPUT_DROP_BATCH = 100
# Expired outputs a script releases from HELD_BYTES per call: bounds its run time when a
# busy hour's outputs expire together (the next calls release the rest).
RELEASE_BATCH = 1000
# Retry-After of a client over the bytes it may hold in Redis: its kept outputs free only
# as they expire (result_ttl_s), its inputs as its jobs end.
HELD_RETRY_AFTER_S = 60
# A streamed upload's reservation lives this long unless renewed; the stream renews it at
# least every quarter of it (a body that pauses body_grace_s is cut long before it lapses).
UPLOAD_LEASE_S = 120
# A body without a declared length reserves this much more each time it passes what it
# reserved: one Redis call per 64 MiB, and at most 64 MiB reserved and not yet written.
UPLOAD_STEP_BYTES = 64 * MiB
# An image's reservation of room in Redis lives this long: its body read at the API's pace
# floor (body_min_bytes_per_s) could take longer, so the API reserves again just before it
# sends the image; a dead API's reservation holds its client's room no longer than this.
IMAGE_LEASE_S = 60
# A client's images on their way into Redis at once (reserved, not yet stored; a body of
# declared length from before it is read): each reservation reads the client's others, so
# their count is bounded, or a client holding thousands of bodies open would make every
# call slow for everyone. More than a client sends at once in earnest; past it, 429.
IMAGES_IN_FLIGHT = 32
# Retry-After of a client at its count of uploads in flight: an upload takes seconds.
UPLOADS_RETRY_AFTER_S = 5
# The overview's window: a client's share of a lane is its block-seconds over the last 5
# minutes, long enough to hold a few jobs, short enough to show who uses the cluster now.
OVERVIEW_WINDOW_S = 300
# A minute's block-seconds outlive the window three times over: a job's tasks are counted
# when it ends, in the minutes they ran, so a job of up to 10 minutes still lands in time.
BLOCK_SECONDS_TTL_S = 15 * 60
# Errored jobs the overview keeps: a screenful, enough to see what goes wrong now.
FAILURES_MAX = 50
# The failures list outlives a quiet weekend, so that Monday's operator still sees Friday's.
FAILURES_TTL_S = 7 * 24 * 3600
# The overview's lead times are of the last hour: recent enough to be today's service.
LEAD_TIMES_WINDOW_S = 3600
# Lead times kept per client: a busy client's thousands of jobs an hour cost Redis and the
# percentiles no more than this; the newest are kept (p99 of 1,000 is still a real figure).
LEAD_TIMES_MAX = 1000
# Tokens the pick script routes from `tasks` per call: bounds one script's run time when
# a producer dumps thousands at once (the rest are routed by the next calls).
ROUTE_BATCH = 100


def result(token: str) -> str:
    return RESULT.format(token=token)


def output(token: str) -> str:
    return OUTPUT.format(token=token)


def input_(token: str) -> str:
    return INPUT.format(token=token)


def staged(token: str, dispatcher: str, attempt: int) -> str:
    return STAGED.format(token=token, dispatcher=dispatcher, attempt=attempt)


def block_seconds(lane: str, minute: int) -> str:
    return BLOCK_SECONDS.format(lane=lane, minute=minute)


def lead_times(client: str) -> str:
    return LEAD_TIMES.format(client=client)


def jobs(client: str) -> str:
    return JOBS.format(client=client)


def idempotency(client: str, sha256: str) -> str:
    return IDEMPOTENCY.format(client=client, sha256=sha256)


def summary(token: str) -> str:
    return SUMMARY.format(token=token)


def processing(dispatcher: str) -> str:
    return PROCESSING.format(dispatcher=dispatcher)


def lease(dispatcher: str) -> str:
    return LEASE.format(dispatcher=dispatcher)


def in_flight(dispatcher: str) -> str:
    return IN_FLIGHT.format(dispatcher=dispatcher)


def queue(lane: str, client: str) -> str:
    return QUEUE.format(lane=lane, client=client)


def ring(lane: str) -> str:
    return RING.format(lane=lane)


def deficit(lane: str) -> str:
    return DEFICIT.format(lane=lane)


def running(lane: str) -> str:
    return RUNNING.format(lane=lane)


def backlog_blocks(lane: str) -> str:
    return BACKLOG_BLOCKS.format(lane=lane)


def wake(lane: str) -> str:
    return WAKE.format(lane=lane)


def client(name: str) -> str:
    return CLIENT.format(name=name)


def api_key(sha256: str) -> str:
    return API_KEY.format(sha256=sha256)


def uploads(kind: str, client: str) -> str:
    return UPLOADS.format(kind=kind, client=client)


def direct_upload(upload_id: str) -> str:
    return DIRECT_UPLOAD.format(upload_id=upload_id)
