-- Extend a live lease. A lease that has already expired is gone (someone else may hold
-- its place now), so renewing it fails and the holder must stop using the connection.
--
-- KEYS[1]  the provider's leases; ARGV[1] now ('' = TIME); ARGV[2] ttl seconds;
-- ARGV[3]  lease id
--
-- Returns 1 when renewed, 0 when the lease no longer exists.

local now = clock(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', num(now + tonumber(ARGV[2])), ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(last[2]) - now) * 1000) + 60000)
return 1
