-- Shared by every script (backend/scripts.py puts it in front of each).
-- Key names come from backend/keys.py through the constants it writes above this line.

-- A record as a table, or nil when it is missing or not a JSON object.
local function decode(raw)
  if not raw then return nil end
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' then return rec end
  return nil
end

local function is_final(rec)
  return rec.status == 'finished' or rec.status == 'errored'
end

-- HINCRBY that drops the field at zero, so hashes list only live counts.
local function count(key, field, by)
  if by == 0 then return 0 end
  local value = redis.call('HINCRBY', key, field, by)
  if value <= 0 then redis.call('HDEL', key, field) end
  return value
end

local function wake(lane)
  local key = WAKE .. lane
  redis.call('LPUSH', key, '1')
  redis.call('LTRIM', key, 0, WAKE_MAX - 1)
end

-- A token goes into its client's queue: at the back when new, at the front when it comes
-- back from a lost attempt (it waited longest). A client with work is in the lane's ring.
local function enqueue(token, rec, front)
  local queue = QUEUE .. rec.lane .. ':' .. rec.client
  if front then redis.call('LPUSH', queue, token) else redis.call('RPUSH', queue, token) end
  -- Once in the ring, however the queue was emptied: two entries would be a double share.
  if redis.call('LLEN', queue) == 1 and not redis.call('LPOS', RING .. rec.lane, rec.client) then
    redis.call('RPUSH', RING .. rec.lane, rec.client)
  end
  count(BACKLOG_BLOCKS .. rec.lane, rec.client, rec.cost)
  wake(rec.lane)
end

-- A token leaves a processing list; the running count of its client follows it.
local function leave(plist, token, rec)
  local removed = redis.call('LREM', plist, 0, token)
  if removed > 0 and rec then count(RUNNING .. rec.lane, rec.client, -removed) end
  return removed
end

-- Fields a run may not overwrite: who holds the job and what it was admitted at. The
-- final write releases `admitted_bytes`, so a run that measured another size (a file that
-- grew, a URL whose size was read again) cannot move its client's backlog.
local KEPT = {token = true, status = true, client = true, lane = true, cost = true,
  admitted_bytes = true, held_bytes = true, dispatcher = true, attempts = true}

local function merge(rec, fields)
  for k, v in pairs(fields) do
    if not KEPT[k] then rec[k] = v end
  end
  return rec
end

-- Epoch seconds by the Redis server's clock (scripts run with effects replication).
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- The allocator's size class for `size` bytes (jemalloc: four classes in each power of two).
local function size_class(size)
  local class = 16
  while class < size do class = class * 2 end
  local step = math.max(class / 8, 16)
  return math.ceil(size / step) * step
end

-- What a value of n bytes costs Redis, at most, stored as compute.redis_values stores it:
-- a hash of PIECE_BYTES pieces, each its allocation (with its 10-byte header, in its size
-- class), its field and entry (32), the hash's table of 8-byte slots (and the old half-size
-- table while it grows), the input's head field (INPUT_HEAD_BYTES) and the key
-- (input:<token>) with its entry. Where the value is stored already, MEMORY USAGE says
-- exactly (stored_cost); this is for bytes not yet sent (held_reserve.lua).
local function cost_of(n)
  local pieces = math.max(math.ceil(n / PIECE_BYTES), 1)
  local last = n - (pieces - 1) * PIECE_BYTES
  local slots = 4
  while slots < pieces do slots = slots * 2 end
  return (pieces - 1) * size_class(PIECE_BYTES + 10) + size_class(last + 10) + 32 * pieces + 12 * slots
    + size_class(INPUT_HEAD_BYTES + 10) + 32 + 160
end

-- What `key` costs Redis now (0 when it is missing): what counts against its client.
-- SAMPLES 0 reads every field of a hash: by the default 5, a 20 MiB value's 21 pieces
-- would be guessed from its full ones, 1 MiB too many.
local function stored_cost(key)
  return redis.call('MEMORY', 'USAGE', key, 'SAMPLES', 0) or 0
end

-- A job's output as compute.redis_values writes it: a hash of pieces (an empty output is
-- one empty piece), kept `ttl` seconds.
local function write_output(key, output, ttl)
  for i = 0, math.max(math.ceil(#output / PIECE_BYTES), 1) - 1 do
    redis.call('HSET', key, tostring(i), string.sub(output, i * PIECE_BYTES + 1, (i + 1) * PIECE_BYTES))
  end
  redis.call('EXPIRE', key, ttl)
end

-- Kept outputs past their expiry stop counting against their clients (HELD_OUTPUTS), at
-- most RELEASE_BATCH a call (so that a script's run time stays bounded).
local function release_outputs(now)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', HELD_OUTPUTS, '-inf', now, 'LIMIT', 0, RELEASE_BATCH)) do
    local _, client, size = string.match(member, '^(%S+) (%S+) (%d+)$')
    if client then
      count(HELD_BYTES, client, -tonumber(size))
      count(HELD_OUTPUT_BYTES, client, -tonumber(size))
    end
    redis.call('ZREM', HELD_OUTPUTS, member)
  end
end

-- Count `cost` bytes against `client` for `ttl` seconds: what an ended job keeps (id: its
-- token), or an idempotency key (id: "<token>/key"); released by release_outputs.
local function hold_for(client, id, cost, ttl)
  count(HELD_BYTES, client, cost)
  count(HELD_OUTPUT_BYTES, client, cost)
  redis.call('ZADD', HELD_OUTPUTS, clock() + tonumber(ttl), id .. ' ' .. client .. ' ' .. cost)
end

-- What an input of `size` bytes holds once stored, with room for an output of `room`.
local function held_cost(size, room)
  return cost_of(size) + cost_of(room)
end

-- A client's images on their way into Redis (keys.UPLOADS, kind `image`, held_reserve.lua,
-- members "<id> <size> <output room>"): lapsed leases and `id`'s own reservation are
-- dropped (it is being renewed, or stored now); the key, what the others reserve (what
-- they will hold once stored) and how many of `id`'s were dropped are returned.
local function reserved_but(client, id, now)
  local key = UPLOADS .. 'image:' .. client
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local others, own = 0, 0
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local owner, size, room = string.match(member, '^(%S+) (%d+) (%d+)$')
    if owner == id then
      redis.call('ZREM', key, member)
      own = own + 1
    else
      others = others + held_cost(tonumber(size), tonumber(room))
    end
  end
  return key, others, own
end

-- A job's compact summary, kept HISTORY_TTL_S (past its record's TTL) for GET /tasks.
local SUMMARY_FIELDS = {'kind', 'status', 'client', 'client_id', 'lane', 'requested_at', 'received_at', 'finished_at', 'error',
  'cancelled', 'queue_wait_s', 'exec_s', 'lead_s', 'bytes', 'report_url'}
local function summarize(token, rec)
  local summary = {token = token}
  for _, name in ipairs(SUMMARY_FIELDS) do summary[name] = rec[name] end
  redis.call('SET', SUMMARY .. token, cjson.encode(summary), 'EX', HISTORY_TTL_S)
end

-- What the operator's overview reads of a job's end (backend/jobs/overview.py): an errored
-- job (not a cancelled one: its client chose it) in FAILURES, with the error its client
-- reads; a finished job's lead time (the timing record's `lead_s`: requested -> finished)
-- in its client's LEAD_TIMES. Both bounded: the list to FAILURES_MAX, the lead times to
-- the last LEAD_TIMES_WINDOW_S and LEAD_TIMES_MAX a client.
local function remember_end(token, rec, status)
  local now = clock()
  if status == 'errored' and not rec.cancelled then
    local failure = {token = token, client = rec.client, kind = rec.kind, error = rec.error,
      ended_at = tonumber(rec.finished_at) or now}
    redis.call('LPUSH', FAILURES, cjson.encode(failure))
    redis.call('LTRIM', FAILURES, 0, FAILURES_MAX - 1)
    redis.call('EXPIRE', FAILURES, FAILURES_TTL_S)
  elseif status == 'finished' and type(rec.client) == 'string' and tonumber(rec.lead_s) then
    local key = LEAD_TIMES .. rec.client
    local since = now - LEAD_TIMES_WINDOW_S
    redis.call('ZADD', key, now, token .. ' ' .. rec.lead_s)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', since)
    redis.call('ZREMRANGEBYRANK', key, 0, -LEAD_TIMES_MAX - 1)
    redis.call('EXPIRE', key, LEAD_TIMES_WINDOW_S)
    redis.call('ZADD', LEAD_TIME_CLIENTS, now, rec.client)
    redis.call('ZREMRANGEBYSCORE', LEAD_TIME_CLIENTS, '-inf', since)
    redis.call('EXPIRE', LEAD_TIME_CLIENTS, LEAD_TIMES_WINDOW_S)
  end
end

-- The final write, and the only one: every path that ends a job comes here. The caller
-- has checked that it may write; the input is dropped (an uploaded file is listed in
-- INPUTS_TO_DROP until the caller's process has deleted it), the client's backlog bytes
-- released (exactly what submit admitted), its held bytes moved from the input
-- (`held_bytes`, what submit counted) to what the job keeps for `ttl`: its output and
-- record (what they cost Redis, or an output file's size, kept in IMAGE_FILES as long) and
-- their entry in HELD_OUTPUTS,
-- bulk job loops woken (a capped client may go on), and the token published on ENDINGS for
-- the status requests waiting on it (backend/endings.py).
-- `output`: the result's bytes, or nil when the caller has put them in place (finish.lua).
local function finalize(token, rec, status, output, ttl)
  rec.token = token
  rec.status = status
  redis.call('SET', RESULT .. token, cjson.encode(rec), 'EX', ttl)
  summarize(token, rec)
  local output_key = RESULT .. token .. ':output'
  if status == 'finished' and output then write_output(output_key, output, ttl) end
  local kept = stored_cost(output_key) + stored_cost(RESULT .. token) + HELD_ENTRY_BYTES
  if status == 'finished' and rec.output_url then
    redis.call('ZADD', IMAGE_FILES, clock() + tonumber(ttl), rec.output_url)
    kept = kept + cost_of(tonumber(rec.output_bytes) or 0)
  end
  if type(rec.client) == 'string' then
    count(HELD_BYTES, rec.client, -(tonumber(rec.held_bytes) or 0))
    hold_for(rec.client, token, kept, ttl)
    if tonumber(rec.admitted_bytes) then count(BACKLOG_BYTES, rec.client, -tonumber(rec.admitted_bytes)) end
  end
  redis.call('DEL', INPUT .. token)
  if rec.delete_input and rec.input_url then redis.call('ZADD', INPUTS_TO_DROP, clock(), token) end
  remember_end(token, rec, status)
  if rec.lane then wake(rec.lane) end
  redis.call('PUBLISH', ENDINGS, token)
end

-- Everything in a processing list goes back to its client's queue (front, original
-- order), status `requested` again, with the reason the attempt was lost.
-- `refund`: the attempt does not count against max_attempts (a graceful hand-back).
local function requeue_all(plist, reason, refund)
  local moved = 0
  while true do
    local token = redis.call('LPOP', plist)  -- newest first, so the oldest ends in front
    if not token then break end
    local raw = redis.call('GET', RESULT .. token)
    local rec = decode(raw)
    if rec and rec.lane then
      count(RUNNING .. rec.lane, rec.client, -1)
      if not is_final(rec) then
        rec.status = 'requested'
        rec.last_error = reason
        rec.progress = nil
        if refund then rec.attempts = math.max((tonumber(rec.attempts) or 1) - 1, 0) end
        redis.call('SET', RESULT .. token, cjson.encode(rec), 'KEEPTTL')
        enqueue(token, rec, true)
        moved = moved + 1
      end
    end
  end
  return moved
end
