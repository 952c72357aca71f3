-- The final write of an attempt: `finished` with its output, or `errored`.
-- Only the attempt that holds the job may write it: the token must be in this
-- dispatcher's processing list and the record must name this dispatcher and attempt.
-- A run that lost its lease (stalled, then reaped) gets 'stale' and its result is
-- discarded; a job that already ended gets 'final'. The first final write wins.
-- KEYS: the dispatcher's processing list.
-- ARGV: token, dispatcher id, attempt, status, JSON fields to merge, output, ttl.
local plist = KEYS[1]
local token, dispatcher, attempt, status = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rec = decode(redis.call('GET', RESULT .. token))
if rec and is_final(rec) then
  leave(plist, token, rec)
  return 'final'
end
if rec and (tonumber(rec.attempts) ~= attempt or rec.dispatcher ~= dispatcher) then
  return 'stale'
end
if redis.call('LPOS', plist, token) == false then return 'stale' end
leave(plist, token, rec)
rec = rec or {}
for k, v in pairs(cjson.decode(ARGV[5])) do rec[k] = v end
finalize(token, rec, status, ARGV[6], ARGV[7])
return 'ok'
