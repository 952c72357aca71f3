-- Claim an expired direct upload for the sweep, as a complete call claims one: exactly one
-- sweeper aborts it, and none while a complete call that began before the expiry holds it
-- (unless that claim is older than the longest complete call: its API died).
-- KEYS: the upload's record, the index of pending uploads. ARGV: upload id, now, longest complete call (s).
-- Returns the record's fields; {} when the record had expired from Redis (the entry is
-- dropped; the S3 upload is the start-up sweep's); false when someone else holds it.
local now, max_s = tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {}
end
local completing = redis.call('HGET', KEYS[1], 'completing')
if completing and now - tonumber(completing) < max_s then return false end
redis.call('HSET', KEYS[1], 'completing', ARGV[2])
return redis.call('HGETALL', KEYS[1])
