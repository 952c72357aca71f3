-- The first ARGV[2] bytes of job ARGV[1]'s input (b'' when it has none), cut from its first
-- piece here (compute.redis_values): the dispatcher reads a PNG's 24-byte header without a
-- reply of the whole piece, up to 1 MiB.
local piece = redis.call('HGET', INPUT .. ARGV[1], '0')
if not piece then return '' end
return string.sub(piece, 1, tonumber(ARGV[2]))
