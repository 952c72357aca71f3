"""A Redis failover as the backend's clients see it: connections to a primary that was
demoted to a replica answer READONLY, and must be dropped, not kept."""

import pytest
from redis import ReadOnlyError, Redis

from backend.jobs.connection import connect
from compute.stored import redis_at
from tests.endpoint import moving_endpoint
from tests.servers import own_redis
from tests.waiting import wait_until


def replicating(primary_port: int, replica_port: int) -> bool:
    """The replica is in sync with the primary, which counts it."""
    link = Redis(port=replica_port).info("replication")["master_link_status"]
    return link == "up" and Redis(port=primary_port).info("replication")["connected_slaves"] == 1


@pytest.mark.parametrize("client", [connect, lambda url: redis_at(url, None)], ids=["backend", "worker"])
def test_a_connection_to_a_demoted_primary_is_dropped_not_kept(client, tmp_path):
    """A failover that does not kill the primary (ElastiCache's test failover, a demotion):
    pooled connections to it stay open, and it answers READONLY to writes. The backend's
    clients (and the workers') drop such a connection and reach the new primary through
    the endpoint at once; a plain redis-py client would keep failing."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        own_redis(tmp_path / "a") as old,
        own_redis(tmp_path / "b", replica_of=old.port) as new,
        moving_endpoint(old.port) as endpoint,
    ):
        wait_until(lambda: replicating(old.port, new.port), what="the replica to sync")
        redis, plain = client(endpoint.url), Redis.from_url(endpoint.url)
        assert redis.set("before", 1) and plain.set("before", 1)  # each pools a connection to the old primary
        endpoint.move_to(new.port)
        Redis(port=new.port).replicaof("NO", "ONE")
        Redis(port=old.port).replicaof("127.0.0.1", str(new.port))
        with pytest.raises(ReadOnlyError):
            plain.set("after", 1)
        assert redis.set("after", 1)
        assert Redis(port=new.port).get("after") == b"1"
