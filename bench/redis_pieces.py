"""How long Redis's one thread is held writing a 20 MiB image: a string against a hash.

    .venv/bin/python -m bench.redis_pieces [--values 5] [--rounds 3]

bench/hostile.py's scenario 1 found B's image jobs waiting on Redis while A's images were
written as strings: each 20 MiB value was made at its full size by its first SETRANGE (the
last piece first), which zero-fills 24 MiB of fresh memory in Redis's only thread, 10-34
ms during which no other client is served. Values are now hashes of pieces that fit the
allocator's 1 MiB class, each its own allocation (compute.redis_values.write_value); the
string layout is kept here as the rival. Both run in turns on one redis-server with AOF
on, as `spacetime up` runs it; the figures are Redis's own (SLOWLOG: the time each
command held the thread) and MEMORY USAGE.
"""

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from redis import Redis

from backend.core.waiting import wait_for
from backend.run.up import redis_argv
from bench.system import core_check
from compute.defaults import MiB
from compute.redis_values import PIECE_BYTES, write_value
from tests.servers import free_port

SIZE = 20 * MiB
STRING_PIECE_BYTES = MiB


def as_string(redis: Redis, key: str, data: bytes) -> None:
    """The layout before: one string, its last piece first (made at its size at once, no
    spare room), with its TTL in one MULTI, then the other pieces."""
    last = (len(data) - 1) // STRING_PIECE_BYTES * STRING_PIECE_BYTES
    with redis.pipeline(transaction=True) as pipe:
        pipe.setrange(key, last, data[last:])
        pipe.expire(key, 3600)
        pipe.execute()
    for start in range(0, last, STRING_PIECE_BYTES):
        redis.setrange(key, start, data[start : start + STRING_PIECE_BYTES])


def as_hash(redis: Redis, key: str, data: bytes) -> None:
    write_value(redis, key, data, 3600)


def held_ms(redis: Redis, write, values: int, data: bytes) -> tuple[float, float, float]:
    """The largest time one command held Redis, the time per value, and MiB per value."""
    redis.slowlog_reset()
    keys = [f"{write.__name__}:{i}" for i in range(values)]
    for key in keys:
        write(redis, key, data)
    entries = redis.slowlog_get(100_000)
    times = [entry["duration"] / 1e3 for entry in entries if not entry["command"].startswith(b"SLOWLOG")]
    memory = sum(redis.memory_usage(key, samples=0) for key in keys) / values / MiB  # every field
    redis.delete(*keys)
    return max(times), sum(times) / values, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--values", type=int, default=5, help="20 MiB values written per round and layout")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(core_check())
    url = f"redis://127.0.0.1:{free_port()}/0"
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(redis_argv(url, Path(folder)), stdout=subprocess.DEVNULL)  # as `up` runs it
        try:
            redis = Redis.from_url(url)
            wait_for(redis.ping, "redis-server", url, 10)
            redis.config_set("slowlog-log-slower-than", 0)
            redis.config_set("slowlog-max-len", 100_000)
            data = os.urandom(SIZE)
            print(
                f"{args.values} values of {SIZE // MiB} MiB a round; string pieces {STRING_PIECE_BYTES // 1024} KiB, "
                f"hash pieces {PIECE_BYTES} B"
            )
            for round_ in range(1, args.rounds + 1):
                string = held_ms(redis, as_string, args.values, data)
                hashed = held_ms(redis, as_hash, args.values, data)
                for name, (largest, per_value, memory) in (("string", string), ("hash", hashed)):
                    print(
                        f"round {round_} {name:6} largest command {largest:5.1f} ms, "
                        f"{per_value:5.1f} ms a value, {memory:.2f} MiB a value"
                    )
                print(
                    f"round {round_} hash against string: largest {hashed[0] / string[0]:.2f}x, "
                    f"per value {hashed[1] / string[1]:.2f}x, memory {hashed[2] / string[2]:.2f}x"
                )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
