"""Redis clients that follow a failover of the primary.

After a failover a pooled connection can reach a node that is now a replica (the old
primary, back as one, or a replica not yet promoted behind an endpoint that already moved):
every write on it answers ``READONLY``, and redis-py keeps a connection that answered an
error. So a ``READONLY`` reply drops the connection and the command runs once more on a
new one, which resolves the endpoint again (ElastiCache's primary endpoint is a DNS name
that moves to the promoted replica). A write refused by a replica was not applied, so
running it again is safe. If the new connection is read-only too, the ReadOnlyError (a
RedisError) goes up like any outage: the API answers 503, a dispatcher's outage path
retries. Connection errors are not retried here: the command may have run.
"""

from typing import Any

from redis import ReadOnlyError, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from compute.redis_values import command_packer


def connect(url: str, **options: Any) -> Redis:
    """A client of ``url`` whose connections are dropped on ``READONLY`` (see above), and
    that sends image bytes without copying them (compute.redis_values.command_packer)."""
    return Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 1, supported_errors=(ReadOnlyError,)),
        command_packer=command_packer(),
        **options,
    )
