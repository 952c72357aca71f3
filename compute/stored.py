"""The image job's task as workers run it: it reads its PNG from Redis and writes its result
there itself, so the bytes never travel dispatcher -> scheduler -> worker and back
(the scheduler every job shares spent ~0.8 ms of CPU a job on them; bench/bytes_path.py
measures the ways).

The task gets plain arguments: a Redis URL and keys. The URL carries no password: task
arguments pass through the Dask scheduler, which anyone on the cluster's network can ask
for them. A worker adds the password from its own environment (``REDIS_PASSWORD_ENV``), and
the user name where it has one (``REDIS_USERNAME_ENV``: on AWS the workers' own Redis user,
which may only read inputs and write staged results; docs/deployment-aws.md).
"""

import os
from functools import cache

from redis import ReadOnlyError, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from compute.defaults import DEFAULT_BLOCK_PX, DEFAULT_MAX_PIXELS
from compute.errors import InvalidImage, InvalidInput
from compute.files import read_file, write_file
from compute.image import randomize_image
from compute.png import output_bound
from compute.redis_values import command_packer, read_value, write_value

# The variable that holds the Redis password (ElastiCache's AUTH token) in a worker's environment.
REDIS_PASSWORD_ENV = "REDIS_AUTH_TOKEN"
# ... and the Redis (ACL) user it authenticates as; unset: the default user.
REDIS_USERNAME_ENV = "REDIS_USERNAME"
# A Redis that does not answer within this is away: the task fails with a RedisError, and
# its dispatcher's outage handling puts the job back in its queue.
REDIS_TIMEOUT_S = 10.0


def randomize_stored(
    redis_url: str,
    input_key: str,
    output_key: str,
    ttl_s: int,
    block: int = DEFAULT_BLOCK_PX,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """``randomize_image`` of the PNG at ``input_key``, stored at ``output_key`` for
    ``ttl_s`` seconds. Nothing comes back through Dask: the dispatcher only waits for the
    task to finish (a result would be one more round trip through the scheduler)."""
    redis = redis_at(redis_url, os.environ.get(REDIS_PASSWORD_ENV), os.environ.get(REDIS_USERNAME_ENV))
    output = shuffled(read_value(redis, input_key), block, max_pixels)
    write_value(redis, output_key, output, ttl_s)


def randomize_file(
    input_url: str,
    output_url: str,
    storage_options: dict,
    block: int = DEFAULT_BLOCK_PX,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> int:
    """``randomize_image`` of the PNG file at ``input_url``, written to ``output_url``; its
    size comes back (what its job's record counts). For an image whose bytes are kept in
    files (compute.files), the same task as ``randomize_stored``."""
    output = shuffled(read_file(input_url, storage_options), block, max_pixels)
    write_file(output_url, output, storage_options)
    return len(output)


def shuffled(png: bytes | None, block: int, max_pixels: int) -> bytes:
    """The image's shuffle, refused (InvalidImage) when it outgrows the room its job holds
    for it, counted against its client (compute.png.output_bound)."""
    if png is None:
        raise InvalidInput("the uploaded image has expired; submit it again")
    output = randomize_image(png, block=block, max_pixels=max_pixels)
    room = output_bound(png)
    if len(output) > room:
        raise InvalidImage(f"the shuffled image takes {len(output)} bytes, over the {room} its job holds for it")
    return output


@cache
def redis_at(url: str, password: str | None, username: str | None = None) -> Redis:
    """One client per URL in a worker process, so a task connects only when its pool has no
    idle connection (redis-py hands each thread a connection of its own)."""
    # A user or password in the URL itself wins over these (redis-py's from_url). A
    # READONLY reply (a demoted primary, after a failover) drops the connection and tries
    # once more on a new one, as backend/jobs/connection.py does: this client lives as
    # long as the worker, and would otherwise fail every image task on that connection.
    return Redis.from_url(
        url,
        username=username,
        password=password,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1, supported_errors=(ReadOnlyError,)),
        command_packer=command_packer(),
    )
