-- Add fields to a record that exists (figures known only after the final write, such as
-- task_compute_s). Status, identity and admitted figures are never touched here (KEPT).
-- ARGV: token, JSON fields.
local rec = decode(redis.call('GET', RESULT .. ARGV[1]))
if not rec then return 0 end
redis.call('SET', RESULT .. ARGV[1], cjson.encode(merge(rec, cjson.decode(ARGV[2]))), 'KEEPTTL')
return 1
