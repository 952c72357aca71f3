-- The start tag of a client's next block: start-time fair queueing (backend/fairshare.py).
-- A block starts at the lane's virtual time, or where the client's previous block
-- finished if that is later; it finishes 1/weight after it starts. Blocks run in the
-- order of their start tags (the Dask priority is minus the tag), so clients that keep
-- blocks waiting get turns in proportion to their weights, and a client that arrives
-- starts at the virtual time: its first block runs next, with no credit for idle time.
-- ARGV: lane, client, weight, ttl. Returns the start tag.
local lane, client, weight, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local vtime = tonumber(redis.call('GET', VTIME .. lane) or '0')
local last = tonumber(redis.call('HGET', VFINISH .. lane, client) or '0')
local start = math.max(vtime, last)
redis.call('HSET', VFINISH .. lane, client, tostring(start + 1 / weight))
redis.call('EXPIRE', VFINISH .. lane, ttl)
return tostring(start)
