-- Make a retry-queue member due `delay` seconds from now on the Redis server's clock
-- (workers/retry.py, schedule()). Workers pass a delay, never a time of their own: the
-- pump compares due times with the same clock (TIME), so worker clock skew cannot make
-- a retry come early or late.
--
-- KEYS[1]  due set: member -> unix time it is due
-- ARGV[1]  member   ARGV[2] delay in seconds (may be negative: overdue)
-- ARGV[3]  "1": only ever move the member closer (ZADD LT; absent members are added)
--
-- Returns 1 when the member was added or moved, else 0.

-- Redis < 5 needs this before writing after TIME (see retry_pump.lua).
if redis.replicate_commands then redis.replicate_commands() end

local t = redis.call('TIME')
-- a Lua number keeps full double precision when passed to redis.call
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
if ARGV[3] == '1' then
  return redis.call('ZADD', KEYS[1], 'LT', 'CH', due, ARGV[1])
end
return redis.call('ZADD', KEYS[1], 'CH', due, ARGV[1])
