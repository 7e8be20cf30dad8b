-- Take one connection lease if fewer than the maximum are live.
--
-- KEYS[1]  the provider's leases: sorted set, member = lease id, score = expiry
-- ARGV[1]  now ('' = the Redis server's TIME); ARGV[2] max leases; ARGV[3] ttl seconds;
-- ARGV[4]  the new lease id
--
-- Returns 1 when the lease was taken, 0 when the cap is reached.

local now = clock(ARGV[1])
-- expired leases are those of workers that died (SIGKILL, lost host) without releasing
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[3])), ARGV[4])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(last[2]) - now) * 1000) + 60000)
return 1
