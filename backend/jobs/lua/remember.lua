-- A request that makes no job (a direct upload's start) keeps its answer for its retries,
-- IDEMPOTENCY_TTL_S, counted against its client's held bytes for as long, as a
-- submission's idempotency key is (submit.lua): an answer lists a presigned URL a part,
-- up to 10,000 of them, megabytes that a client could otherwise keep by the hundred.
-- ARGV: the idempotency key, the value to keep, the client, the upload's id.
-- Returns 1 when kept; 0 when a concurrent request with the key kept one first.
local key, value, client, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not redis.call('SET', key, value, 'EX', IDEMPOTENCY_TTL_S, 'NX') then return 0 end
hold_for(client, id .. '/key', stored_cost(key) + HELD_ENTRY_BYTES, IDEMPOTENCY_TTL_S)
return 1
