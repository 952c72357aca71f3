-- Blocks done of a running job, shown by its status. Only the attempt that holds it writes.
-- ARGV: token, dispatcher id, attempt, done, total.
local rec = decode(redis.call('GET', RESULT .. ARGV[1]))
if not rec or rec.status ~= 'received' or rec.dispatcher ~= ARGV[2] then return 0 end
if tonumber(rec.attempts) ~= tonumber(ARGV[3]) then return 0 end
rec.progress = {done = tonumber(ARGV[4]), total = tonumber(ARGV[5])}
redis.call('SET', RESULT .. ARGV[1], cjson.encode(rec), 'KEEPTTL')
return 1
