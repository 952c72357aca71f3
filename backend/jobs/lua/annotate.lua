-- Add fields to a record that exists (figures known only after the final write, such as
-- task_compute_s). Status and identity fields are never touched here.
-- ARGV: token, JSON fields.
local rec = decode(redis.call('GET', RESULT .. ARGV[1]))
if not rec then return 0 end
for k, v in pairs(cjson.decode(ARGV[2])) do
  if k ~= 'status' and k ~= 'token' and k ~= 'client' and k ~= 'dispatcher' and k ~= 'attempts' then rec[k] = v end
end
redis.call('SET', RESULT .. ARGV[1], cjson.encode(rec), 'KEEPTTL')
return 1
