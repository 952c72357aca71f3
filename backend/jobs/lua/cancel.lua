-- Cancel a job for its client (DELETE /tasks/<token>), in one step: the token leaves
-- whichever list holds it (`tasks`, its client's queue, or a processing list), the counters
-- it held are released, and the record ends `errored` with `cancelled`. Nothing brings it
-- back: claim, requeue and reap skip or drop final records, and a late final write of the
-- attempt that ran it answers 'final'. A dispatcher running it hears of it on CANCELS.
-- ARGV: token, client ('' in open mode: there the token itself grants access), now, ttl.
-- Returns {'missing'}, {'cancelled', record JSON} (now, or by an earlier call) or
-- {'ended', record JSON} (it had ended on its own).
local token, client, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rec = decode(redis.call('GET', RESULT .. token))
if not rec or (client ~= '' and rec.client ~= client) then return {'missing'} end
if is_final(rec) then
  if rec.cancelled then return {'cancelled', cjson.encode(rec)} end
  return {'ended', cjson.encode(rec)}
end

if rec.status == 'received' and rec.dispatcher then
  leave(PROCESSING .. rec.dispatcher, token, rec)
  redis.call('PUBLISH', CANCELS, token)
elseif redis.call('LREM', TASKS, 0, token) == 0 and rec.lane then
  -- Routed (claim.lua normalised lane, client and cost): its client's queue counts it.
  local queue = QUEUE .. rec.lane .. ':' .. rec.client
  if redis.call('LREM', queue, 0, token) > 0 then
    count(BACKLOG_BLOCKS .. rec.lane, rec.client, -rec.cost)
    if redis.call('LLEN', queue) == 0 then  -- as claim.lua's drop_client
      local deficits = DEFICIT .. rec.lane
      redis.call('LREM', RING .. rec.lane, 0, rec.client)
      redis.call('HDEL', deficits, rec.client)
      if redis.call('HGET', deficits, '@visit') == rec.client then redis.call('HDEL', deficits, '@visit') end
    end
  end
end

rec.cancelled = true
rec.error = 'cancelled by the client'
rec.finished_at = now
finalize(token, rec, 'errored', '', ttl)
return {'cancelled', cjson.encode(rec)}
