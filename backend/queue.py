"""The reliable queue, dispatcher side: claim, lease, reap, release.

A dispatcher claims a token with BLMOVE from ``tasks`` into its own processing list,
so a token is always in exactly one list. While alive it renews ``lease:<id>``; when
it dies the lease expires and any other dispatcher's reaper moves its processing list
back to the front of ``tasks``. No job is lost; a job may run twice (a dispatcher that
stalled past its lease), and JobStore's first-final-write-wins makes that harmless.
"""

import os
import socket
import uuid
from typing import cast

from redis import Redis

from backend import keys

# KEYS: dispatchers set, tasks. ARGV: processing key prefix, lease key prefix.
# Keys built inside the script are fine on a single Redis (not Redis Cluster).
# Orphans go to the right end of `tasks`, the end dispatchers take from: they waited
# longest, so they run next; LMOVE from the left keeps their original order.
_REAP = """
local moved = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then
    while redis.call('LMOVE', ARGV[1] .. id, KEYS[2], 'LEFT', 'RIGHT') do
      moved = moved + 1
    end
    redis.call('SREM', KEYS[1], id)
  end
end
return moved
"""

# KEYS: processing list, tasks, lease, dispatchers set. ARGV: dispatcher id.
# A graceful exit: hand back what we hold, then disappear, in one step.
_RELEASE = """
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return moved
"""


def new_dispatcher_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class JobQueue:
    """One dispatcher's view of the ``tasks`` list."""

    def __init__(self, redis: Redis, dispatcher_id: str, lease_s: float):
        self.redis = redis
        self.id = dispatcher_id
        self.lease_s = lease_s
        self.processing_key = keys.processing(dispatcher_id)
        self._reap = redis.register_script(_REAP)
        self._release = redis.register_script(_RELEASE)

    def heartbeat(self) -> None:
        """Renew the lease; register in the dispatchers set (TTL'd like every key)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.lease(self.id), "1", px=int(self.lease_s * 1000))
            pipe.sadd(keys.DISPATCHERS, self.id)
            pipe.expire(keys.DISPATCHERS, keys.dispatchers_ttl_s(self.lease_s))
            pipe.execute()

    def claim(self, timeout_s: float = keys.CLAIM_TIMEOUT_S) -> str | None:
        """Block up to ``timeout_s`` for a token; it lands in our processing list."""
        token = cast(bytes | None, self.redis.blmove(keys.TASKS, self.processing_key, timeout_s, "RIGHT", "LEFT"))  # type: ignore[arg-type]  # float seconds are fine
        return token.decode() if token is not None else None

    def reap(self) -> int:
        """Requeue the jobs of every dispatcher whose lease has expired."""
        return self._reap(
            keys=[keys.DISPATCHERS, keys.TASKS],
            args=[keys.PROCESSING.format(dispatcher=""), keys.LEASE.format(dispatcher="")],
        )

    def release(self) -> int:
        """Requeue what we still hold and drop our lease (graceful shutdown)."""
        return self._release(
            keys=[self.processing_key, keys.TASKS, keys.lease(self.id), keys.DISPATCHERS],
            args=[self.id],
        )
