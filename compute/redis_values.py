"""Large values written to and read from Redis a piece at a time.

Redis holds a whole command in a connection's query buffer, and builds a whole reply in
its output buffer, beside the value itself: for a 20 MiB image, 24 MiB more for each
writer or reader at once, kept on a connection for seconds after (a query buffer shrinks
once its connection has been idle 2 s). bench/hostile.py, scenario 1, saw them take Redis
past a client's bound. In pieces, a connection holds one piece there. Used for images:
the API writes inputs and reads results, the image task (compute.stored) the reverse.
"""

from typing import cast

from redis import Redis
from redis.connection import Encoder, PythonRespSerializer

from compute.defaults import MiB

# What one command or reply carries at most; an image under it costs one round trip.
PIECE_BYTES = MiB
# Arguments longer than this are sent as they are, not copied into the command's buffer
# (redis-py's own cutoff).
COPY_CUTOFF_BYTES = 6000
# The Redis commands these functions send: the workers' ACL allows these and no more
# (infra/spacetime_infra/cache.py, checked by tests/test_deploy_files.py).
COMMANDS = ("getrange", "exists", "set", "setrange", "expire", "multi", "exec")


def command_packer() -> PythonRespSerializer:
    """What turns commands into bytes for the clients that write large values (pass it as
    ``command_packer`` to ``Redis.from_url``): redis-py's own packer, which sends a long
    argument as it is. With hiredis installed redis-py packs every command with hiredis,
    into a new buffer holding a copy of the whole command: a fresh 1 MiB buffer a piece,
    its pages faulted in each time. Writing a 20 MiB value costs 7 ms of CPU this way and
    40 with hiredis's packer; a 349 KB cat.png 0.16 ms and 0.20; small commands the same
    (redis-py 8.1, hiredis 3.5, measured here). Replies are still read by hiredis."""
    return PythonRespSerializer(COPY_CUTOFF_BYTES, Encoder("utf-8", "strict", False).encode)


def write_value(redis: Redis, key: str, data: bytes, ttl_s: int) -> None:
    """``data`` at ``key`` for ``ttl_s`` seconds.

    The last piece goes first, with the TTL in the same MULTI: Redis makes the string at
    its full size at once (grown piece by piece, it would keep up to 1 MiB spare), and no
    one ever sees the key without a TTL. Every other piece is a round trip of its own:
    pipelined, they would pile up in the connection's query buffer, the very buffer that
    pieces keep small."""
    last = max(len(data) - 1, 0) // PIECE_BYTES * PIECE_BYTES
    with redis.pipeline(transaction=True) as pipe:
        if data:
            pipe.setrange(key, last, data[last:])
        else:  # SETRANGE makes no key of nothing
            pipe.set(key, b"")
        pipe.expire(key, ttl_s)
        pipe.execute()
    for start in range(0, last, PIECE_BYTES):
        redis.setrange(key, start, data[start : start + PIECE_BYTES])


def read_value(redis: Redis, key: str) -> bytes | None:
    """The bytes at ``key``, None when it is missing. Its pieces are of one value: inputs
    and outputs are written once, never changed in place."""
    pieces: list[bytes] = []
    while not pieces or len(pieces[-1]) == PIECE_BYTES:
        start = len(pieces) * PIECE_BYTES
        pieces.append(cast(bytes, redis.getrange(key, start, start + PIECE_BYTES - 1)))
    value = b"".join(pieces)
    return value if value or redis.exists(key) else None
