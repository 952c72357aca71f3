-- Recompute every counter and ring of the queues from the lists, the records and the kept
-- outputs; report where the stored ones differ (drift) and, with repair, write the
-- recomputed ones. One step, so that nothing moves while it counts: it reads every live
-- job's record once (O(live jobs)), which is why it runs every few minutes, not each beat.
-- Nothing is missed by listing keys with a SCAN before the script: a client's queue that
-- appears later also has a ring entry and a backlog-blocks field (enqueue writes the three
-- together), and a dispatcher is in `dispatchers` from before its first claim until its
-- processing list has been emptied by reap.lua or release.lua.
-- Reservations (keys.UPLOADS) are leases counted apart from every counter here: a request
-- in flight is no drift. Lapsed ones (their API died) are dropped, a due release.
-- ARGV: repair (0/1), JSON {"queues": [queue keys], "processing": [dispatcher ids],
--       "reservations": [reservation keys]} (a SCAN's), every output (0/1: read every
--       entry of HELD_OUTPUTS, however many).
-- Returns JSON [{"key", "field", "stored", "recomputed"}...]; a ring's entries are lists.
local repair = ARGV[1] == '1'
local found = cjson.decode(ARGV[2])
local every_output = ARGV[3] == '1'
local now = clock()
release_outputs(now)  -- outputs past their expiry: a due release, not drift
for _, key in ipairs(found.reservations or {}) do redis.call('ZREMRANGEBYSCORE', key, '-inf', now) end

local want = {}  -- counter key -> {field -> recomputed value}
local function add(key, field, by)
  want[key] = want[key] or {}
  want[key][field] = (want[key][field] or 0) + by
end

-- A token in a list: a job not yet final holds its admitted bytes in the backlog and its
-- input in Redis, as submit.lua counted them and the final write releases them.
local function live(token, rec)
  if not rec or is_final(rec) or type(rec.client) ~= 'string' then return end
  add(BACKLOG_BYTES, rec.client, tonumber(rec.admitted_bytes) or 0)
  add(HELD_BYTES, rec.client, tonumber(rec.held_bytes) or 0)
end

for _, token in ipairs(redis.call('LRANGE', TASKS, 0, -1)) do
  live(token, decode(redis.call('GET', RESULT .. token)))
end

local lanes = {interactive = {}, bulk = {}}  -- lane -> {client -> true}: whose queue to read
for _, key in ipairs(found.queues) do
  local lane, client = string.match(key, '^' .. QUEUE .. '(%a+):(.+)$')
  if lane and lanes[lane] then lanes[lane][client] = true end
end
local rings = {}  -- lane -> clients with queued work, in no order
for lane, clients in pairs(lanes) do
  for _, client in ipairs(redis.call('LRANGE', RING .. lane, 0, -1)) do clients[client] = true end
  for _, client in ipairs(redis.call('HKEYS', BACKLOG_BLOCKS .. lane)) do clients[client] = true end
  want[BACKLOG_BLOCKS .. lane], want[RUNNING .. lane], rings[lane] = {}, {}, {}
  for client in pairs(clients) do
    local tokens = redis.call('LRANGE', QUEUE .. lane .. ':' .. client, 0, -1)
    if #tokens > 0 then rings[lane][client] = true end
    for _, token in ipairs(tokens) do
      local rec = decode(redis.call('GET', RESULT .. token))
      -- As claim.lua counts: a queued token's cost until the pick takes or drops it.
      if rec then add(BACKLOG_BLOCKS .. lane, client, tonumber(rec.cost) or 1) end
      live(token, rec)
    end
  end
end

local ids = {}
for _, id in ipairs(found.processing) do ids[id] = true end
for _, id in ipairs(redis.call('ZRANGE', DISPATCHERS, 0, -1)) do ids[id] = true end
for id in pairs(ids) do
  for _, token in ipairs(redis.call('LRANGE', PROCESSING .. id, 0, -1)) do
    local rec = decode(redis.call('GET', RESULT .. token))
    if rec and rec.lane and type(rec.client) == 'string' then add(RUNNING .. rec.lane, rec.client, 1) end
    live(token, rec)
  end
end

want[HELD_BYTES] = want[HELD_BYTES] or {}
want[BACKLOG_BYTES] = want[BACKLOG_BYTES] or {}
-- Kept outputs count in held bytes by their sums per client. The sums are recomputed from
-- the entries when asked, or while there are few; else they are taken as stored (reading
-- millions of entries in one step would stop Redis for seconds).
local outputs = {}
if every_output or redis.call('ZCARD', HELD_OUTPUTS) <= DOCTOR_OUTPUTS_MAX then
  for _, member in ipairs(redis.call('ZRANGE', HELD_OUTPUTS, 0, -1)) do
    local _, client, size = string.match(member, '^(%S+) (%S+) (%d+)$')
    if client then outputs[client] = (outputs[client] or 0) + tonumber(size) end
  end
  want[HELD_OUTPUT_BYTES] = outputs
else
  local flat = redis.call('HGETALL', HELD_OUTPUT_BYTES)
  for i = 1, #flat, 2 do outputs[flat[i]] = tonumber(flat[i + 1]) end
end
for client, size in pairs(outputs) do add(HELD_BYTES, client, size) end

local drift = {}
for key, fields in pairs(want) do
  local stored = {}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do stored[flat[i]] = tonumber(flat[i + 1]) end
  local differs = false
  for field, value in pairs(fields) do
    if value ~= 0 and stored[field] ~= value then
      drift[#drift + 1] = {key = key, field = field, stored = stored[field] or 0, recomputed = value}
      differs = true
    end
  end
  for field, value in pairs(stored) do
    if (fields[field] or 0) == 0 then
      drift[#drift + 1] = {key = key, field = field, stored = value, recomputed = 0}
      differs = true
    end
  end
  if repair and differs then
    redis.call('DEL', key)
    for field, value in pairs(fields) do
      if value ~= 0 then redis.call('HSET', key, field, value) end
    end
  end
end

-- A ring holds each client with queued work once, and nobody else: the order is kept.
for lane, clients in pairs(rings) do
  local ring, deficits = RING .. lane, DEFICIT .. lane
  local stored = redis.call('LRANGE', ring, 0, -1)
  local seen, kept = {}, {}
  for _, client in ipairs(stored) do
    if clients[client] and not seen[client] then kept[#kept + 1] = client end
    seen[client] = true
  end
  for client in pairs(clients) do
    if not seen[client] then kept[#kept + 1] = client end
  end
  if #kept ~= #stored or table.concat(kept, ' ') ~= table.concat(stored, ' ') then
    local recomputed = {}
    for i, client in ipairs(kept) do recomputed[i] = client end
    drift[#drift + 1] = {key = ring, stored = stored, recomputed = recomputed}
    if repair then
      redis.call('DEL', ring)
      if #kept > 0 then redis.call('RPUSH', ring, unpack(kept)) end
      for _, client in ipairs(stored) do
        if not clients[client] then redis.call('HDEL', deficits, client) end
      end
    end
  end
end
return cjson.encode(drift)
