-- Number of live leases (expired ones pruned first).
-- KEYS[1]  the provider's leases; ARGV[1] now ('' = TIME)
local now = clock(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
return redis.call('ZCARD', KEYS[1])
