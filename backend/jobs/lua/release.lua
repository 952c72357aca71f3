-- A dispatcher's graceful exit: hand back what it holds (the attempt is not counted),
-- then disappear, in one step.
-- ARGV: dispatcher id.
local id = ARGV[1]
local moved = requeue_all(PROCESSING .. id, 'its dispatcher shut down before it ended', true)
redis.call('DEL', LEASE .. id, IN_FLIGHT .. id)
redis.call('ZREM', DISPATCHERS, id)
return moved
