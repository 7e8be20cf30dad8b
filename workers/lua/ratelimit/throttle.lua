-- A throttling reply (421, 4.7.x, 454 Throttling, HTTP 429): slow the bucket down for
-- every worker (multiplicative decrease), honour Retry-After, and record why.
--
-- KEYS[1]   the bucket to slow down: the provider's, or one limited domain's
-- KEYS[2]   the provider's status hash (read by `bulkmail status`)
-- ARGV[1]   now ('' = the Redis server's TIME)
-- ARGV[2]   configured rate per second of that bucket ('' = none: nothing to scale)
-- ARGV[3]   its burst
-- ARGV[4]   recovery: fraction of the configured rate regained per second
-- ARGV[5]   decrease factor (0.5 halves the rate)
-- ARGV[6]   lowest factor (the floor of the effective rate over the configured one)
-- ARGV[7]   window: a decrease within this many seconds of the last is the same storm
-- ARGV[8]   Retry-After seconds ('' = none given)
-- ARGV[9]   block seconds when there is neither a rate to scale nor a Retry-After
-- ARGV[10]  reason (the provider's reply, for status and logs)
-- ARGV[11]  scope: '' for the provider, else the limited domain whose bucket this is
-- ARGV[12]  the domain the reply was about, if any (informational)
--
-- Returns {decreased (1/0), factor, blocked_until, recovered_at} (numbers as strings).

local now = clock(ARGV[1])
local rate = optnum(ARGV[2])
local burst = tonumber(ARGV[3])
local rec = tonumber(ARGV[4])
local factor = tonumber(ARGV[5])
local minf = tonumber(ARGV[6])
local window = tonumber(ARGV[7])
local retry_after = optnum(ARGV[8])
local scope = ARGV[11]

local b = load_bucket(KEYS[1], burst, now)
if rate ~= nil then
  refill(b, rate, burst, rec, now)
else
  b.ts = math.max(b.ts, now)
end

local decreased = 0
-- Several workers report the same storm within moments of each other; halving once per
-- report would collapse the rate to the floor for one event.
if rate ~= nil and (b.dec == nil or now - b.dec >= window) then
  b.f = math.max(minf, b.f * factor)
  b.dec = now
  -- drop the saved-up tokens: they were earned at the rate the provider just refused
  b.tokens = math.min(b.tokens, 0)
  decreased = 1
end

if retry_after == nil and rate == nil then
  retry_after = tonumber(ARGV[9])
end
if retry_after ~= nil and retry_after > 0 then
  b.blk = math.max(b.blk, now + retry_after)
  b.tokens = math.min(b.tokens, 0)
end
save_bucket(KEYS[1], b, rate, burst, rec, now)

local recovered_at = math.max(b.blk, now)
if b.f < 1 then
  if rec > 0 then
    recovered_at = recovered_at + (1 - b.f) / rec
  else
    recovered_at = recovered_at + 86400
  end
end

-- one throttling episode runs from its first report until the bucket is back to normal
local sfx = ''
if scope ~= '' then
  sfx = ':' .. scope
end
local prev = redis.call('HMGET', KEYS[2], 'since' .. sfx, 'until' .. sfx)
local since = tonumber(prev[1])
local prev_until = tonumber(prev[2])
if since == nil or prev_until == nil or prev_until <= now then
  since = now
end
redis.call('HSET', KEYS[2], 'since' .. sfx, num(since), 'until' .. sfx, num(recovered_at),
           'reason', ARGV[10], 'at', num(now), 'scope', scope, 'domain', ARGV[12])
redis.call('HINCRBY', KEYS[2], 'throttles', 1)
if decreased == 1 then
  redis.call('HINCRBY', KEYS[2], 'decreases', 1)
end
return {decreased, num(b.f), num(b.blk), num(recovered_at)}
