"""Every Redis key name and every time constant of the job contract, in one place.

The first three names are the original system's contract: clients and dispatchers
written for it read the list ``tasks`` and the record ``result:<token>``.
"""

# The queue: tokens, LPUSHed by the API, taken from the right by dispatchers (FIFO).
TASKS = "tasks"
# The job record, a JSON object: {"token", "kind", "status", "client", timestamps...}.
RESULT = "result:{token}"
# Raw result bytes (a PNG, or the even-sum JSON): kept apart so the record stays small.
OUTPUT = "result:{token}:output"
# Raw input bytes of jobs small enough to travel through Redis (images).
INPUT = "input:{token}"
# A dispatcher's in-flight tokens (reliable-queue pattern: BLMOVE tasks -> here).
PROCESSING = "processing:{dispatcher}"
# Exists while the dispatcher is alive; expires LEASE_S after its last renewal.
LEASE = "lease:{dispatcher}"
# Set of dispatcher ids that may own a processing list; the reaper walks it.
DISPATCHERS = "dispatchers"
# Hash of job counters and time sums written by dispatchers, read by GET /metrics.
METRICS = "metrics"

# How long a blocking claim waits before the dispatcher checks whether it should stop.
CLAIM_TIMEOUT_S = 1.0
# A dispatcher renews its lease this many times per lease period, so one missed
# renewal (a slow Redis round trip) does not make it look dead.
LEASE_RENEWALS_PER_PERIOD = 3
# Job counters live as long as jobs keep coming; Prometheus reads a reset as a restart.
METRICS_TTL_S = 30 * 24 * 3600


def dispatchers_ttl_s(lease_s: float) -> int:
    """The ``dispatchers`` set outlives any lease by far: it only vanishes when nobody renews it."""
    return int(lease_s * 10) + 60


def result(token: str) -> str:
    return RESULT.format(token=token)


def output(token: str) -> str:
    return OUTPUT.format(token=token)


def input_(token: str) -> str:
    return INPUT.format(token=token)


def processing(dispatcher: str) -> str:
    return PROCESSING.format(dispatcher=dispatcher)


def lease(dispatcher: str) -> str:
    return LEASE.format(dispatcher=dispatcher)
