-- The final write of an attempt: `finished` with its output, or `errored`.
-- Only the attempt that holds the job may write it: the token must be in this
-- dispatcher's processing list and the record must name this dispatcher and attempt.
-- A run that lost its lease (stalled, then reaped) gets 'stale' and its result is
-- discarded; a job that already ended gets 'final'. The first final write wins.
-- The output comes as bytes (ARGV[6]), or as the attempt's staged key (KEYS[2]) that a
-- worker task wrote it to: renamed into place (the bytes do not move), or deleted when
-- this attempt may not write.
-- KEYS: the dispatcher's processing list[, the staged output].
-- ARGV: token, dispatcher id, attempt, status, JSON fields to merge, output, ttl.
local plist, staged = KEYS[1], KEYS[2]
local token, dispatcher, attempt, status = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ttl = ARGV[7]

local function discard(answer)
  if staged then redis.call('DEL', staged) end
  return answer
end

local rec = decode(redis.call('GET', RESULT .. token))
if rec and is_final(rec) then
  leave(plist, token, rec)
  return discard('final')
end
if rec and (tonumber(rec.attempts) ~= attempt or rec.dispatcher ~= dispatcher) then
  return discard('stale')
end
if redis.call('LPOS', plist, token) == false then return discard('stale') end
local fields = cjson.decode(ARGV[5])
-- Checked before any write: a failed RENAME would stop the script half-way. Only a Redis
-- that lost writes (or an attempt slower than STAGED_TTL_S) gets here.
if staged and status == 'finished' and redis.call('EXISTS', staged) == 0 then
  status = 'errored'
  fields.error = 'the result was lost before it could be stored; submit the job again'
end
leave(plist, token, rec)
rec = merge(rec or {}, fields)
local output = ARGV[6]
if fields.output_url then output = nil end  -- a file (IMAGE_FILES), not bytes
if staged then
  output = nil
  if status == 'finished' then
    redis.call('RENAME', staged, RESULT .. token .. ':output')
    redis.call('EXPIRE', RESULT .. token .. ':output', ttl)
  else
    redis.call('DEL', staged)
  end
end
finalize(token, rec, status, output, ttl)
return 'ok'
