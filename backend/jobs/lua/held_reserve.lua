-- Reserve room in Redis for an image's bytes before the API reads or sends them: the bytes
-- the client holds, its other reservations and these must fit the bytes it may hold. A
-- check alone let a client's concurrent submits all pass it and all push their image into
-- Redis' buffers, only for submit.lua to refuse the extras (bench/hostile.py, scenario 1);
-- reserved, a client has at most its bound in flight into Redis, however many it sends.
-- submit.lua turns the reservation into held bytes (or drops it, refused) in its step; a
-- request that fails first drops it (ZREM); a dead API's lapses with its lease. Asked
-- again with the same id, it renews the lease and checks again (the lease may have lapsed).
-- An image reserves what it will hold once stored: what its bytes cost Redis, and room for
-- its output (its kind's bound on it, compute.png.output_bound, from the header the API
-- reads first). A client has at most
-- IMAGES_IN_FLIGHT reservations: each call reads them all.
-- ARGV: client, reservation id (the job's token), size, output room, max held bytes unless
--       the client's record sets `max_held_bytes` (0: none), lease (s).
-- Returns {1, 0}, or when refused (and the id's reservation dropped) {-1, bytes held and
-- reserved now} or {-2, held limit}, as submit.lua, or {-3, reservations} at the count.
local client, id, size, room = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local held_limit = tonumber(redis.call('HGET', CLIENT .. client, 'max_held_bytes') or ARGV[5])
local lease = tonumber(ARGV[6])
local now = clock()
local key = UPLOADS .. 'image:' .. client
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local in_flight = redis.call('ZCARD', key)
release_outputs(now)
local _, reserved, renewed = reserved_but(client, id, now)
if in_flight - renewed >= IMAGES_IN_FLIGHT then return {-3, in_flight} end
local taken = tonumber(redis.call('HGET', HELD_BYTES, client) or '0') + reserved
local cost = held_cost(size, room)
if held_limit > 0 and cost > held_limit then return {-2, held_limit} end
if held_limit > 0 and taken + cost > held_limit then return {-1, taken} end
redis.call('ZADD', key, now + lease, id .. ' ' .. size .. ' ' .. room)
if redis.call('TTL', key) < lease then redis.call('EXPIRE', key, math.ceil(lease)) end
return {1, 0}
