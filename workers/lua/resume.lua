-- Resume a paused campaign (workers/pause.py, resume_campaign()).
--
-- KEYS[1]  the campaign record hash
-- KEYS[2]  the campaign's paused-batches set
-- KEYS[3]  the provider's retry queue (member -> due time)
-- ARGV[1]  retry-queue member prefix ("<campaign id>:")
-- ARGV[2]  who resumes (for status)
--
-- Clears the pause, and moves every batch set aside while paused onto the retry queue
-- due now (LT: a batch already due earlier keeps its time; a later due time, e.g. an old
-- backoff, is pulled in), so the pump republishes them within its next round. One step,
-- so no batch can be set aside after the set was taken (see chunk_gate.lua).
-- Returns how many batches were released, or -1 when the campaign was not paused.

if redis.replicate_commands then redis.replicate_commands() end

if redis.call('HEXISTS', KEYS[1], 'paused') == 0 then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HDEL', KEYS[1], 'paused', 'paused_by')
redis.call('HSET', KEYS[1], 'resumed', tostring(now), 'resumed_by', ARGV[2])
local batches = redis.call('SMEMBERS', KEYS[2])
for _, b in ipairs(batches) do
  redis.call('ZADD', KEYS[3], 'LT', now, ARGV[1] .. b)
end
redis.call('DEL', KEYS[2])
return #batches
