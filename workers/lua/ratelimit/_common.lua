-- Shared prelude of every rate-limit script. LuaScript.load(include=...) prepends it
-- before loading, so the arithmetic exists once and matches workers/ratelimit/bucket.py
-- operation for operation (the unit tests compare the two).

-- Seconds on the Redis server's clock, or the explicit `now` a test passes. One clock for
-- the whole cluster is the point: workers' own clocks drift and would each see a
-- different bucket.
local function clock(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- floor() after tiny float error: 0.1 * 30 must give 3 tokens, not 2.
local EPS = 1e-9

-- Added to every wait for tokens: an epoch timestamp as a double is exact only to about
-- 2.4e-7 s, so "now + wait" could land a hair before the tokens are complete.
local WAIT_MARGIN = 1e-6

local function optnum(arg)
  if arg == nil or arg == '' then
    return nil
  end
  return tonumber(arg)
end

-- Full precision, so a value read back is the value written (tostring keeps 14 digits).
local function num(x)
  return string.format('%.17g', x)
end

-- A missing hash is a full, unthrottled bucket: a new provider or domain starts with its
-- burst available.
local function load_bucket(key, burst, now)
  local v = redis.call('HMGET', key, 'tokens', 'ts', 'f', 'dec', 'blk')
  return {
    tokens = tonumber(v[1]) or burst or 0,
    ts = tonumber(v[2]) or now,
    f = tonumber(v[3]) or 1,
    dec = tonumber(v[4]),
    blk = tonumber(v[5]) or 0,
  }
end

-- Bring the bucket to `now`: tokens accrue at rate * f while f climbs back to 1 by `rec`
-- per second (additive recovery). Integrated exactly, so a long idle gap gives the same
-- tokens as many short calls. Nothing accrues (and f does not recover) while blocked by
-- a Retry-After: the provider asked for silence, not for a refill.
local function refill(b, rate, burst, rec, now)
  if now <= b.ts then
    -- clock behind the last update (explicit `now` in tests, a failed-over server):
    -- keep the state rather than refill backwards
    b.tokens = math.min(b.tokens, burst)
    return
  end
  local start = math.max(b.ts, b.blk)
  if now > start then
    local dt = now - start
    local f0 = b.f
    local added
    if f0 >= 1 or rec <= 0 then
      added = rate * f0 * dt
    else
      local t1 = (1 - f0) / rec
      if dt <= t1 then
        added = rate * (f0 * dt + 0.5 * rec * dt * dt)
        b.f = f0 + rec * dt
      else
        added = rate * (f0 * t1 + 0.5 * rec * t1 * t1 + (dt - t1))
        b.f = 1
      end
    end
    b.tokens = b.tokens + added
  end
  b.tokens = math.min(b.tokens, burst)
  b.ts = now
end

-- Seconds from `now` until the bucket (already refilled to now) holds `need` tokens,
-- with nobody else taking any.
local function time_to(b, rate, rec, need, now)
  local wait0 = math.max(0, b.blk - now)
  local deficit = need - b.tokens
  if deficit <= EPS then
    return wait0
  end
  local x = deficit / rate
  local f0 = b.f
  wait0 = wait0 + WAIT_MARGIN
  if f0 >= 1 or rec <= 0 then
    return wait0 + x / f0
  end
  local t1 = (1 - f0) / rec
  local at_t1 = f0 * t1 + 0.5 * rec * t1 * t1
  if x <= at_t1 then
    -- root of rec/2 t^2 + f0 t - x = 0, in the form without cancellation
    return wait0 + 2 * x / (f0 + math.sqrt(f0 * f0 + 2 * rec * x))
  end
  return wait0 + t1 + (x - at_t1)
end

-- Whole tokens that can be handed out now.
local function available(b, now)
  if now < b.blk then
    return 0
  end
  return math.max(0, math.floor(b.tokens + EPS))
end

-- Tokens to wait for before asking again: a `step` seconds' worth at the current rate
-- (at least 1, at most the burst), so high rates are taken in slices instead of one
-- round trip per token, and low rates are not made to wait for a whole burst.
local function step_need(rest, rate, f, burst, step)
  return math.min(rest, math.max(1, math.min(burst, math.floor(rate * f * step + EPS))))
end

-- Seconds for which to keep an idle bucket: until it is full, recovered and unblocked
-- (it is then the same as a missing one), plus a margin; at most a day.
local function bucket_ttl_ms(b, rate, burst, rec, now)
  local s = math.max(0, b.blk - now)
  if b.f < 1 then
    if rec <= 0 then
      s = 86400
    else
      s = s + (1 - b.f) / rec
    end
  end
  if rate ~= nil and rate > 0 then
    s = s + math.max(0, burst - b.tokens) / (rate * b.f)
  end
  return math.floor(math.min(s + 60, 86400) * 1000)
end

local function save_bucket(key, b, rate, burst, rec, now)
  local fields = {'ts', num(b.ts), 'f', num(b.f), 'blk', num(b.blk)}
  if rate ~= nil then
    table.insert(fields, 'tokens')
    table.insert(fields, num(b.tokens))
  end
  if b.dec ~= nil then
    table.insert(fields, 'dec')
    table.insert(fields, num(b.dec))
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, bucket_ttl_ms(b, rate, burst, rec, now))
end
