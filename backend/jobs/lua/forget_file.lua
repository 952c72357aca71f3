-- Take an image file that was deleted off IMAGE_FILES (JobStore.forget_file), unless it
-- was listed again since it was found due: a final write that keeps it moved its time on.
-- ARGV: its URL, the time it was found due by.
local due = redis.call('ZSCORE', IMAGE_FILES, ARGV[1])
if due and tonumber(due) <= tonumber(ARGV[2]) then redis.call('ZREM', IMAGE_FILES, ARGV[1]) end
