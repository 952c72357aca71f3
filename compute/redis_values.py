"""Large values read from Redis a piece at a time.

For a GET of a 20 MiB image, Redis builds the whole reply before it sends any of it: a
24 MiB buffer beside the value, for each reader at once (bench/hostile.py, scenario 1 saw
them take Redis past a client's bound). Read in pieces, a reader holds one piece there.
Used by the image task on workers (compute.stored) and by the API for results.
"""

from typing import cast

from redis import Redis

# What a reader holds in Redis' buffers at most; an image under it costs one round trip.
READ_PIECE_BYTES = 1024 * 1024


def read_value(redis: Redis, key: str) -> bytes | None:
    """The bytes at ``key``, None when it is missing. Its pieces are of one value: inputs
    and outputs are written once, never changed in place."""
    pieces: list[bytes] = []
    while not pieces or len(pieces[-1]) == READ_PIECE_BYTES:
        start = len(pieces) * READ_PIECE_BYTES
        pieces.append(cast(bytes, redis.getrange(key, start, start + READ_PIECE_BYTES - 1)))
    value = b"".join(pieces)
    return value if value or redis.exists(key) else None
