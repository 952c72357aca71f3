-- Reserve bytes of the uploads store for a client's upload before they are written. A new
-- upload must fit the client's count of uploads of its kind; every byte reserved must fit
-- the client's backlog quota together with its jobs queued or running and its other
-- uploads in flight, streamed and direct. A reservation is a lease that each call renews:
-- an upload whose API died stops counting once its lease lapses.
-- ARGV: kind ('stream' | 'direct'), client, upload id, bytes it reserved so far (0: a new
--       upload), bytes it needs added, bytes it would like added (a body without a length
--       asks for a step ahead, and takes less when the quota has less room), lease (s),
--       most uploads of the kind (0: no limit), max backlog bytes (-1: no limit).
-- Returns {1, bytes reserved now}, or when refused {0, uploads of the kind in flight} or
-- {-1, bytes the client takes now}.
local kind, client, id = ARGV[1], ARGV[2], ARGV[3]
local reserved, need, more = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local lease, max_uploads, limit = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local now = clock()
local mine = UPLOADS .. kind .. ':' .. client
local taken = tonumber(redis.call('HGET', BACKLOG_BYTES, client) or '0')
for _, each in ipairs({'stream', 'direct'}) do
  local key = UPLOADS .. each .. ':' .. client
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    taken = taken + tonumber(string.match(member, ' (%d+)$'))
  end
end
local uploads = redis.call('ZCARD', mine)
if reserved == 0 and max_uploads > 0 and uploads >= max_uploads then return {0, uploads} end
if limit >= 0 then
  if taken + need > limit then return {-1, taken} end
  more = math.min(more, limit - taken)
end
redis.call('ZREM', mine, id .. ' ' .. reserved)
redis.call('ZADD', mine, now + lease, id .. ' ' .. (reserved + more))
if redis.call('TTL', mine) < lease then redis.call('EXPIRE', mine, math.ceil(lease)) end
return {1, reserved + more}
