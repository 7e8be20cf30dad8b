-- Delete the batch lock only if it is still ours (workers/batchlock.py): after a long
-- stall another worker may hold it now.
--
-- KEYS[1] the lock   ARGV[1] our token
-- Returns 1 when deleted, 0 when it was not ours (or already gone).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
