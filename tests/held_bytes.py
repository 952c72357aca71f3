"""What a job's input counts against the bytes its client may hold in Redis."""

from redis import Redis

from backend.core.job import new_token
from backend.jobs import keys
from compute.redis_values import write_value


def held_for(redis: Redis, data: bytes) -> int:
    """What an input of these bytes holds once stored: what Redis says it costs (MEMORY
    USAGE of every piece, of a key like an input's, made as JobStore makes inputs), once
    for itself and once as room for its output."""
    probe = keys.input_(new_token())
    write_value(redis, probe, data, 60, head_bytes=keys.INPUT_HEAD_BYTES)
    try:
        return keys.HELD_PER_INPUT * int(redis.memory_usage(probe, samples=0))
    finally:
        redis.delete(probe)
