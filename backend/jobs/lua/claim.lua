-- Claim the next job of a lane for a dispatcher, in one step:
--   1. route new tokens from `tasks` into their clients' queues;
--   2. pick a client by weighted deficit round robin (cost = the job's blocks), skipping
--      clients at their cap of running jobs in the lane;
--   3. move the job's token into the dispatcher's processing list and mark it `received`,
--      or fail it when it has used up its attempts (a poison job never loops).
-- KEYS: the dispatcher's processing list.
-- ARGV: lane, dispatcher id, now (epoch s), max attempts, ttl, default weight,
--       default max running bulk jobs, default max running interactive jobs (0: no limit).
-- Returns nil (nothing to run), {'run', record JSON} or {'gave-up', record JSON}.
local plist = KEYS[1]
local lane, dispatcher, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local max_attempts, ttl = tonumber(ARGV[4]), ARGV[5]
local default_weight, default_cap = tonumber(ARGV[6]), tonumber(ARGV[7])
local default_interactive_cap = tonumber(ARGV[8]) or 0
local ring, deficits, running = RING .. lane, DEFICIT .. lane, RUNNING .. lane

-- 1. Route. Records are normalised here once (lane, client, cost), so that every later
-- script can count by them. An unreadable record is failed on the spot.
for _ = 1, ROUTE_BATCH do
  local token = redis.call('RPOP', TASKS)
  if not token then break end
  local raw = redis.call('GET', RESULT .. token)
  local rec = decode(raw)
  if raw and not rec then
    finalize(token, {finished_at = now, error = 'job record is not readable JSON; resubmit the job'}, 'errored', '', ttl)
  elseif rec and not is_final(rec) then
    if rec.lane ~= 'interactive' and rec.lane ~= 'bulk' then
      rec.lane = KIND_LANES[rec.kind] or 'interactive'  -- from backend/core/kinds.py
    end
    if type(rec.client) ~= 'string' or rec.client == '' then rec.client = 'anonymous' end
    rec.cost = math.max(math.floor(tonumber(rec.cost) or 1), 1)
    redis.call('SET', RESULT .. token, cjson.encode(rec), 'KEEPTTL')
    enqueue(token, rec, false)
  end
end

local function setting(client, name, default)
  return tonumber(redis.call('HGET', CLIENT .. client, name) or '') or default
end

-- A client at its cap of running jobs in this lane is skipped, not waited for. In the
-- interactive lane the cap keeps workers free for other clients' images (0: no cap).
local function capped(client)
  local cap
  if lane == 'bulk' then
    cap = setting(client, 'max_running_bulk', default_cap)
  else
    cap = setting(client, 'max_running_interactive', default_interactive_cap)
    if cap <= 0 then return false end
  end
  return tonumber(redis.call('HGET', running, client) or '0') >= cap
end

local function drop_client(client)
  redis.call('LREM', ring, 0, client)
  redis.call('HDEL', deficits, client)
  if redis.call('HGET', deficits, '@visit') == client then redis.call('HDEL', deficits, '@visit') end
end

-- The head job of a client's queue, dropping tokens whose record expired or ended. A queue
-- it empties takes its client out of the ring, or the next enqueue would add a second entry.
local function head(client)
  local queue = QUEUE .. lane .. ':' .. client
  while true do
    local token = redis.call('LINDEX', queue, 0)
    if not token then
      drop_client(client)
      return nil
    end
    local rec = decode(redis.call('GET', RESULT .. token))
    if rec and not is_final(rec) then return token, rec end
    redis.call('LPOP', queue)
    if rec then count(BACKLOG_BLOCKS .. lane, client, -rec.cost) end
  end
end

-- Jump ahead: add the whole rounds in which nobody could be served at once, instead of
-- looping through them (a 1,000-block job would take 1,000 rounds at one block a round).
local function skip_idle_rounds()
  local rounds = nil
  local eligible = {}
  for _, client in ipairs(redis.call('LRANGE', ring, 0, -1)) do
    local token, rec = head(client)
    if token and not capped(client) then
      local weight = setting(client, 'weight', default_weight)
      local short = rec.cost - tonumber(redis.call('HGET', deficits, client) or '0')
      local needed = math.ceil(short / weight) - 1
      eligible[#eligible + 1] = {client, weight}
      if rounds == nil or needed < rounds then rounds = needed end
    end
  end
  if rounds and rounds > 0 then
    for _, entry in ipairs(eligible) do
      redis.call('HINCRBY', deficits, entry[1], rounds * entry[2])
    end
  end
end

-- Take the client's head job: into the processing list, `received` (or failed, when it
-- has used up its attempts).
local function serve(client, token, rec)
  redis.call('HINCRBY', deficits, client, -rec.cost)
  local queue = QUEUE .. lane .. ':' .. client
  redis.call('LPOP', queue)
  if redis.call('LLEN', queue) == 0 then drop_client(client) end
  count(BACKLOG_BLOCKS .. lane, client, -rec.cost)
  redis.call('LPUSH', plist, token)
  count(running, client, 1)
  rec.attempts = (tonumber(rec.attempts) or 0) + 1
  if rec.attempts > max_attempts then
    leave(plist, token, rec)
    rec.error = 'gave up after ' .. max_attempts .. ' attempts: ' .. (rec.last_error or 'unknown reason')
    rec.finished_at = now
    finalize(token, rec, 'errored', '', ttl)
    return {'gave-up', cjson.encode(rec)}
  end
  rec.status = 'received'
  rec.received_at = now
  rec.dispatcher = dispatcher
  redis.call('SET', RESULT .. token, cjson.encode(rec), 'KEEPTTL')
  return {'run', cjson.encode(rec)}
end

-- 2 and 3. Deficit round robin: the client at the head of the ring gets its quantum
-- (its weight, in blocks) once per turn, and is served while its deficit covers the cost
-- of its head job; then the turn passes (the client goes to the back of the ring).
local function has_eligible()
  for _, client in ipairs(redis.call('LRANGE', ring, 0, -1)) do
    if head(client) and not capped(client) then return true end
  end
  return false
end

local passes, guard = 0, 8 * redis.call('LLEN', ring) + 8
while guard > 0 do
  guard = guard - 1
  local client = redis.call('LINDEX', ring, 0)
  if not client then return nil end
  local token, rec = head(client)
  if token then
    if not capped(client) then
      if redis.call('HGET', deficits, '@visit') ~= client then
        redis.call('HINCRBY', deficits, client, setting(client, 'weight', default_weight))
        redis.call('HSET', deficits, '@visit', client)
      end
      if tonumber(redis.call('HGET', deficits, client)) >= rec.cost then
        return serve(client, token, rec)
      end
    end
    redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    redis.call('HDEL', deficits, '@visit')
    passes = passes + 1
    if passes >= redis.call('LLEN', ring) then  -- a whole turn of the ring served nobody
      if not has_eligible() then return nil end
      skip_idle_rounds()
      passes = 0
    end
  end
end
return nil
