-- Extend the batch lock, but only while it is still ours (workers/batchlock.py).
--
-- KEYS[1] the lock (string: the holder's token)
-- ARGV[1] our token   ARGV[2] ttl in milliseconds (relative: no clock is compared)
--
-- Returns 1 when renewed, 0 when the lock is gone (expired, or Redis lost it), -1 when
-- another holder has it.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return -1
end
return 0
