"""Large values written to and read from Redis a piece at a time, as a hash of pieces.

Redis holds a whole command in a connection's query buffer, and builds a whole reply in
its output buffer, beside the value itself: for a 20 MiB image, 24 MiB more for each
writer or reader at once, kept on a connection for seconds after (a query buffer shrinks
once its connection has been idle 2 s). bench/hostile.py, scenario 1, saw them take Redis
past a client's bound. In pieces, a connection holds one piece there.

A value is a hash, field ``"0"``, ``"1"``, ... each holding one piece, not one string:
a string is made at its full size by one command, which zero-fills its whole allocation
in Redis's only thread (a 20 MiB image: 10-34 ms in which no other client is served,
bench/redis_pieces.py), and takes the allocator's next size class (24 MiB). A piece is its
own allocation within the 1 MiB class: no command holds Redis past about a millisecond,
and a 20 MiB value costs 20 MiB. Raw bytes still, never pickled (docs/architecture.md).
Used for images, the API writing inputs and reading results, the image task
(compute.stored) the reverse, and for every job's output (finish.lua writes small ones
the same way).
"""

from collections.abc import Iterator
from typing import cast

from redis import Redis
from redis.connection import Encoder, PythonRespSerializer

from compute.defaults import MiB

# What one command or reply carries at most; an image under it costs one round trip. With
# Redis's header (10 bytes) a piece fits in the allocator's 1 MiB class, not the next one.
PIECE_BYTES = MiB - 64
# Arguments longer than this are sent as they are, not copied into the command's buffer
# (redis-py's own cutoff).
COPY_CUTOFF_BYTES = 6000
# The Redis commands these functions send: the workers' ACL allows these and no more
# (infra/spacetime_infra/cache.py, checked by tests/test_deploy_files.py).
COMMANDS = ("hget", "hset", "expire", "multi", "exec")
# The field that holds a value's first bytes apart, where its writer asked (read_head).
HEAD_FIELD = "head"


def command_packer() -> PythonRespSerializer:
    """What turns commands into bytes for the clients that write large values (pass it as
    ``command_packer`` to ``Redis.from_url``): redis-py's own packer, which sends a long
    argument as it is. With hiredis installed redis-py packs every command with hiredis,
    into a new buffer holding a copy of the whole command: a fresh 1 MiB buffer a piece,
    its pages faulted in each time. Writing a 20 MiB value costs 7 ms of CPU this way and
    40 with hiredis's packer; a 349 KB cat.png 0.16 ms and 0.20; small commands the same
    (redis-py 8.1, hiredis 3.5, measured here). Replies are still read by hiredis."""
    return PythonRespSerializer(COPY_CUTOFF_BYTES, Encoder("utf-8", "strict", False).encode)


def write_value(redis: Redis, key: str, data: bytes, ttl_s: int, head_bytes: int = 0) -> None:
    """``data`` at ``key`` for ``ttl_s`` seconds; its first ``head_bytes`` also apart, for
    a reader that needs only them (read_head: a PNG's size, not a reply of a whole piece).

    The first piece goes with the TTL in one MULTI: no one ever sees the key without a
    TTL. Every other piece is a round trip of its own: pipelined, they would pile up in the
    connection's query buffer, the very buffer that pieces keep small. An empty value is
    one empty piece, so that it reads as empty, not missing."""
    head: list[str | bytes] = [HEAD_FIELD, data[:head_bytes]] if head_bytes else []
    with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, items=["0", data[:PIECE_BYTES], *head])
        pipe.expire(key, ttl_s)
        pipe.execute()
    for start in range(PIECE_BYTES, len(data), PIECE_BYTES):
        redis.hset(key, str(start // PIECE_BYTES), data[start : start + PIECE_BYTES])


def read_head(redis: Redis, key: str) -> bytes:
    """The first bytes that write_value kept apart at ``key`` (b"" when there are none)."""
    return cast(bytes | None, redis.hget(key, HEAD_FIELD)) or b""


def read_value(redis: Redis, key: str) -> bytes | None:
    """The bytes at ``key``, None when it is missing."""
    pieces = list(read_pieces(redis, key))
    return b"".join(pieces) if pieces else None


def read_pieces(redis: Redis, key: str) -> Iterator[bytes]:
    """The bytes at ``key`` a piece at a time (none when it is missing), so that a reader
    holds one piece, not the value. Every piece but the last is full: the first short or
    missing one ends the value (inputs and outputs are written once, before anyone reads
    them, never changed in place)."""
    index = 0
    while (piece := cast(bytes | None, redis.hget(key, str(index)))) is not None:
        yield piece
        if len(piece) < PIECE_BYTES:
            return
        index += 1
