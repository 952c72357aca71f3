"""What a job's input counts against the bytes its client may hold in Redis."""

from redis import Redis

from backend.core.job import new_token
from backend.core.kinds import RANDOMIZE
from backend.jobs import keys, scripts
from compute.redis_values import write_value


def held_for(redis: Redis, data: bytes, output_room: int | None = None, as_file: bool = False) -> int:
    """What an input of these bytes holds once stored: what Redis says it costs (MEMORY
    USAGE of every piece, of a key like an input's, made as JobStore makes inputs), and
    room for an output of ``output_room`` bytes (by default an image's bound on it).
    ``as_file``: kept as a file (settings.image_file_bytes), it holds what the scripts
    count for one of its size."""
    room = RANDOMIZE.output_room(data) if output_room is None else output_room
    if as_file:
        return cost_of(redis, len(data)) + cost_of(redis, room)
    probe = keys.input_(new_token())
    write_value(redis, probe, data, 60, head_bytes=keys.INPUT_HEAD_BYTES)
    try:
        return int(redis.memory_usage(probe, samples=0)) + cost_of(redis, room)
    finally:
        redis.delete(probe)


def cost_of(redis: Redis, size: int) -> int:
    """The scripts' own ``cost_of`` (backend/jobs/lua/prelude.lua): what a value of ``size``
    bytes will cost Redis, at most, as they count room for it."""
    return int(redis.eval(scripts.prelude() + "return cost_of(tonumber(ARGV[1]))", 0, size))
