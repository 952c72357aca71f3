-- Requeue the jobs of dispatchers whose lease has lapsed (killed, or stalled past it).
-- ARGV: dispatcher ids to check: the members of `dispatchers`, plus any owner of a
-- processing list found by a scan (so an id missing from the set is still reaped).
-- Returns how many jobs went back to their queues.
local moved = 0
for _, id in ipairs(ARGV) do
  if redis.call('EXISTS', LEASE .. id) == 0 then
    moved = moved + requeue_all(PROCESSING .. id,
      'its dispatcher stopped renewing its lease (killed or stalled)', false)
    redis.call('ZREM', DISPATCHERS, id)
    redis.call('DEL', IN_FLIGHT .. id)
  end
end
return moved
