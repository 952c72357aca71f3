-- Blocks finished: the lane's virtual time moves on to the latest start tag among them.
-- ARGV: lane, start tag, ttl.
local vtime = tonumber(redis.call('GET', VTIME .. ARGV[1]) or '0')
if tonumber(ARGV[2]) > vtime then
  redis.call('SET', VTIME .. ARGV[1], ARGV[2], 'EX', ARGV[3])
end
return 1
