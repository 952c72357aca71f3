-- Hand one job back to its queue because the attempt was lost through no fault of the job
-- (the scheduler went away, no worker was left, this dispatcher lost track of it). Only
-- the attempt that holds it may do so; the attempt still counts against max_attempts.
-- KEYS: the dispatcher's processing list.
-- ARGV: token, dispatcher id, attempt (0: any attempt of ours), reason.
local plist = KEYS[1]
local token, dispatcher, attempt, reason = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rec = decode(redis.call('GET', RESULT .. token))
if not rec or not rec.lane then
  redis.call('LREM', plist, 0, token)
  return 0
end
if is_final(rec) then
  leave(plist, token, rec)
  return 0
end
if rec.dispatcher ~= dispatcher or (attempt > 0 and tonumber(rec.attempts) ~= attempt) then return 0 end
if leave(plist, token, rec) == 0 then return 0 end
rec.status = 'requested'
rec.last_error = reason
rec.progress = nil
redis.call('SET', RESULT .. token, cjson.encode(rec), 'KEEPTTL')
enqueue(token, rec, true)
return 1
