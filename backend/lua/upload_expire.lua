-- Take an expired direct upload off the books, so that exactly one sweeper aborts it on
-- S3. One a complete call holds (it began before the expiry) is left to that call, unless
-- the claim is older than the longest complete call (its API died).
-- KEYS: the upload's record, the index of pending uploads. ARGV: upload id, now, longest complete call (s).
-- Returns the record's fields (empty when the record had already expired from Redis), or
-- false when a complete call still holds it.
local now, max_s = tonumber(ARGV[2]), tonumber(ARGV[3])
local completing = redis.call('HGET', KEYS[1], 'completing')
if completing and now - tonumber(completing) < max_s then return false end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return fields
