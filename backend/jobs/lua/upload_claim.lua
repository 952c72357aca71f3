-- Claim a pending direct upload for one complete call: a second call meanwhile is told
-- 'busy', so two calls can never both complete it and queue its job twice. A claim older
-- than the longest complete call is a dead API's, and may be taken again.
-- KEYS: the upload's record. ARGV: client, now (epoch s), longest complete call (s).
-- Returns {'ok', field, value, ...} | {'missing'} | {'expired', expires_at} | {'busy'}.
local client, now, max_s = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local owner, expires_at, completing = unpack(redis.call('HMGET', KEYS[1], 'client', 'expires_at', 'completing'))
-- Another client's upload reads exactly as one that does not exist.
if not owner or owner ~= client then return {'missing'} end
if now > tonumber(expires_at) then return {'expired', expires_at} end
if completing and now - tonumber(completing) < max_s then return {'busy'} end
redis.call('HSET', KEYS[1], 'completing', ARGV[2])
local reply = redis.call('HGETALL', KEYS[1])
table.insert(reply, 1, 'ok')
return reply
