-- Store a new job and queue its token on `tasks`, unless it would take its client over its
-- backlog quota (input bytes of jobs queued or running) or over the bytes it may hold in
-- Redis (inputs and kept outputs). One step: a check and the enqueue cannot be split by a
-- race. The record and the input get no TTL until the final write (keys.UNTIL_FINAL): a
-- job that waits longer than the TTL must not vanish from under its counters. An input was
-- sent before, in pieces, to its key with a lease as its TTL (JobStore.submit: a 20 MiB
-- argument would hold a 20 MiB query buffer on its connection for seconds after); the
-- job's reservation of room for it (held_reserve.lua, by its token) ends here, whatever
-- the answer: stored, the input is kept (no TTL) and counts as held, at what it costs Redis
-- with room for its output (its kind's bound on it: an image's shuffle may come out far
-- larger than the PNG it came from); refused, it is deleted. An image kept as a file
-- (settings.image_file_bytes) was written before, by the API: it counts the same, and
-- its record takes it off IMAGE_FILES (a refused one is deleted by the API, or by the
-- sweep of IMAGE_FILES). An idempotency
-- key counts against the client's held bytes for as long as it is kept (a day).
-- ARGV: token, record JSON (with `admitted_bytes`, released by the final write), held input
--       (0: none, 1: sent to its key, 2: the file its record names), client, input size, output room (bytes), max backlog bytes
--       (-1: none), lane,
--       max held bytes unless the client's record sets `max_held_bytes` (0: none),
--       its member in the client's list of jobs, the oldest member to keep there (and
--       at most HISTORY_MAX members),
--       its idempotency key ('': none), the request's fingerprint.
-- Returns {1, backlog after}, or when refused {0, backlog now}, {-1, bytes held and reserved
-- by its other images now}, or {-2, held limit} for an input larger than the whole limit
-- (waiting would not help); with an idempotency key seen before, nothing is stored:
-- {2, its token} (the same request: a retry) or {3, its token} (another request, same key).
local token, record, has_input = ARGV[1], ARGV[2], ARGV[3]
local client, size, room = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local limit, lane = tonumber(ARGV[7]), ARGV[8]
local held_limit = tonumber(redis.call('HGET', CLIENT .. client, 'max_held_bytes') or ARGV[9])
local idempotency, fingerprint = ARGV[12], ARGV[13]
local now = clock()
local _, reserved = reserved_but(client, token, now)
local function refuse(answer, figure)
  redis.call('DEL', INPUT .. token)
  return {answer, figure}
end
if idempotency ~= '' then
  local seen = decode(redis.call('GET', idempotency))
  if seen then return refuse(seen.fingerprint == fingerprint and 2 or 3, seen.token) end
end
local backlog = tonumber(redis.call('HGET', BACKLOG_BYTES, client) or '0')
if limit >= 0 and backlog + size > limit then return refuse(0, backlog) end
release_outputs(now)
local held = tonumber(redis.call('HGET', HELD_BYTES, client) or '0') + reserved
local stored = 0
if has_input == '1' then stored = stored_cost(INPUT .. token) + cost_of(room) end
if has_input == '2' then stored = held_cost(size, room) end
if held_limit > 0 and stored > held_limit then return refuse(-2, held_limit) end
if held_limit > 0 and held + stored > held_limit then return refuse(-1, held) end
local rec = decode(record)
if has_input == '1' then redis.call('PERSIST', INPUT .. token) end
if has_input == '2' then redis.call('ZREM', IMAGE_FILES, rec.input_url) end
if has_input ~= '0' then
  count(HELD_BYTES, client, stored)
  rec.held_bytes = stored  -- what the final write releases, whatever Redis says of it then
  record = cjson.encode(rec)
end
redis.call('SET', RESULT .. token, record)
redis.call('LPUSH', TASKS, token)
count(BACKLOG_BYTES, client, size)
wake(lane)
local jobs = JOBS .. client
redis.call('ZADD', jobs, 0, ARGV[10])
redis.call('ZREMRANGEBYLEX', jobs, '-', '(' .. ARGV[11])
local over = redis.call('ZCARD', jobs) - HISTORY_MAX
if over > 0 then  -- one at a time, in the steady state
  for _, name in ipairs(redis.call('ZRANGE', jobs, 0, over - 1)) do
    redis.call('DEL', SUMMARY .. string.sub(name, string.find(name, ':', 1, true) + 1))
  end
  redis.call('ZREMRANGEBYRANK', jobs, 0, over - 1)
end
redis.call('EXPIRE', jobs, HISTORY_TTL_S)
summarize(token, rec)
if idempotency ~= '' then
  redis.call('SET', idempotency, cjson.encode({fingerprint = fingerprint, token = token}), 'EX', IDEMPOTENCY_TTL_S)
  hold_for(client, token .. '/key', stored_cost(idempotency) + HELD_ENTRY_BYTES, IDEMPOTENCY_TTL_S)
end
return {1, backlog + size}
