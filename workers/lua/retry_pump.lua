-- Claim the due members of one provider's retry queue (workers/retry.py, pump()).
--
-- KEYS[1]  due set: member -> unix time it is due
-- KEYS[2]  claimed set: member -> unix time its claim (lease) expires
-- ARGV[1]  now in unix seconds, or "" to use the Redis server clock (TIME)
-- ARGV[2]  the most members to take
-- ARGV[3]  lease in seconds, or "" to remove taken members without claiming them
--
-- Returns the members taken, earliest due first. One script = one atomic step, so any
-- number of workers may pump at once and each member comes out exactly once.

-- Redis < 5 needs this before writing after TIME (a non-deterministic command); later
-- versions replicate script effects anyway and treat it as a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])

-- unpack() is limited by the Lua C stack (~8000 values): write in slices.
local CHUNK = 500

-- 1. Claims whose lease ran out: the claimer died between pump and ack. They become due
-- again (at their expiry time, which is <= now). NX: if the member was scheduled again
-- in the meantime, that newer schedule wins.
while true do
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES',
                             'LIMIT', 0, CHUNK)
  if #expired == 0 then break end
  local back, gone = {}, {}
  for i = 1, #expired, 2 do
    back[#back + 1] = expired[i + 1]
    back[#back + 1] = expired[i]
    gone[#gone + 1] = expired[i]
  end
  redis.call('ZADD', KEYS[1], 'NX', unpack(back))
  redis.call('ZREM', KEYS[2], unpack(gone))
  if #gone < CHUNK then break end
end

-- 2. Take what is due, earliest first (ties in member order).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for i = 1, #due, CHUNK do
  local last = math.min(i + CHUNK - 1, #due)
  redis.call('ZREM', KEYS[1], unpack(due, i, last))
  if lease then
    -- Numbers passed to redis.call keep full double precision (strings from
    -- tostring() would be cut to 14 digits).
    local claim = {}
    for j = i, last do
      claim[#claim + 1] = now + lease
      claim[#claim + 1] = due[j]
    end
    redis.call('ZADD', KEYS[2], unpack(claim))
  end
end
return due
