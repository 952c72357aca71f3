-- Whether a client has room for `size` more bytes in Redis now: submit.lua's check of the
-- bytes it holds, without the bytes. The API asks before it sends an image, so that a
-- client at its limit does not ship each refused 20 MiB into Redis' buffers first
-- (bench/hostile.py, scenario 1); submit.lua checks again in the step that stores them.
-- ARGV: client, size, max held bytes unless the client's record sets `max_held_bytes` (0: none).
-- Returns {1, 0}, or when refused {-1, held bytes now} or {-2, held limit}, as submit.lua.
local client, stored = ARGV[1], tonumber(ARGV[2])
local held_limit = tonumber(redis.call('HGET', CLIENT .. client, 'max_held_bytes') or ARGV[3])
release_outputs(clock())
local held = tonumber(redis.call('HGET', HELD_BYTES, client) or '0')
if held_limit > 0 and stored > held_limit then return {-2, held_limit} end
if held_limit > 0 and held + stored > held_limit then return {-1, held} end
return {1, 0}
