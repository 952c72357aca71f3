-- Store a new job and queue its token on `tasks`, unless it would take its client over
-- the backlog quota. One step: a quota check and the enqueue cannot be split by a race.
-- ARGV: token, record JSON, has input (0/1), input bytes, ttl, client, input size,
--       max backlog bytes (-1: none), lane, its member in the client's list of jobs,
--       the oldest member to keep there, its idempotency key ('': none), the request's fingerprint.
-- Returns {1, backlog after} or {0, backlog now} when refused; with an idempotency key seen
-- before, nothing is stored: {2, its token} (the same request: a retry) or {3, its token}
-- (a different request with the same key).
local token, record, has_input, input, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local client, size, limit, lane = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local idempotency, fingerprint = ARGV[12], ARGV[13]
if idempotency ~= '' then
  local seen = decode(redis.call('GET', idempotency))
  if seen then return {seen.fingerprint == fingerprint and 2 or 3, seen.token} end
end
local backlog = tonumber(redis.call('HGET', BACKLOG_BYTES, client) or '0')
if limit >= 0 and backlog + size > limit then return {0, backlog} end
redis.call('SET', RESULT .. token, record, 'EX', ttl)
if has_input == '1' then redis.call('SET', INPUT .. token, input, 'EX', ttl) end
redis.call('LPUSH', TASKS, token)
count(BACKLOG_BYTES, client, size)
wake(lane)
local jobs = JOBS .. client
redis.call('ZADD', jobs, 0, ARGV[10])
redis.call('ZREMRANGEBYLEX', jobs, '-', '(' .. ARGV[11])
redis.call('EXPIRE', jobs, HISTORY_TTL_S)
summarize(token, decode(record))
if idempotency ~= '' then
  redis.call('SET', idempotency, cjson.encode({fingerprint = fingerprint, token = token}), 'EX', IDEMPOTENCY_TTL_S)
end
return {1, backlog + size}
