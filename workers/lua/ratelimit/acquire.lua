-- Take tokens for one chunk of a batch, all or part, from the provider's bucket and the
-- buckets of the recipient domains that have a limit, in one atomic step.
--
-- KEYS[1]    the provider's bucket (hash)
-- KEYS[1+i]  the bucket of limited domain i
-- ARGV[1]    now ('' = the Redis server's TIME)
-- ARGV[2]    recovery: fraction of the configured rate regained per second after a throttle
-- ARGV[3]    step: seconds' worth of tokens worth waiting for (see step_need)
-- ARGV[4]    provider rate per second ('' = no provider limit, only Retry-After blocks)
-- ARGV[5]    provider burst (bucket capacity)
-- ARGV[6]    messages for domains without a limit (they need provider tokens only)
-- ARGV[7+3(i-1)], +1, +2   domain i: rate per second, burst, messages wanted
--
-- Returns {granted_unlimited, wait_unlimited, granted_1, wait_1, ...}: grants as
-- integers, waits (seconds until what was not granted could progress) as strings.

-- Split `total` tokens among groups each able to take at most caps[i] (max-min fair,
-- "water-filling"): small groups (a slow domain's few tokens) are served in full, the
-- rest is shared, so one domain neither starves nor stalls the others. Integers only,
-- so bucket.py's copy gives the same answer.
local function fair_share(total, caps)
  local n = #caps
  local order = {}
  for i = 1, n do
    order[i] = i
  end
  table.sort(order, function(a, b)
    if caps[a] ~= caps[b] then
      return caps[a] < caps[b]
    end
    return a < b
  end)
  local g = {}
  local left = total
  for k, i in ipairs(order) do
    local give = math.min(caps[i], math.floor(left / (n - k + 1)))
    g[i] = give
    left = left - give
  end
  for i = 1, n do
    if left <= 0 then
      break
    end
    local extra = math.min(caps[i] - g[i], left)
    g[i] = g[i] + extra
    left = left - extra
  end
  return g
end

local now = clock(ARGV[1])
local rec = tonumber(ARGV[2])
local step = tonumber(ARGV[3])
local prate = optnum(ARGV[4])
local pburst = tonumber(ARGV[5])
local nd = #KEYS - 1

local p = load_bucket(KEYS[1], pburst, now)
local pavail
if prate ~= nil then
  refill(p, prate, pburst, rec, now)
  pavail = available(p, now)
elseif now < p.blk then
  pavail = 0
else
  pavail = math.huge
end

local doms = {}
local caps = {tonumber(ARGV[6])}
for i = 1, nd do
  local a = 7 + 3 * (i - 1)
  local d = {rate = tonumber(ARGV[a]), burst = tonumber(ARGV[a + 1]),
             want = tonumber(ARGV[a + 2])}
  d.b = load_bucket(KEYS[1 + i], d.burst, now)
  refill(d.b, d.rate, d.burst, rec, now)
  doms[i] = d
  caps[1 + i] = math.min(d.want, available(d.b, now))
end

local g = fair_share(pavail, caps)

local total = g[1]
for i = 1, nd do
  doms[i].b.tokens = doms[i].b.tokens - g[1 + i]
  total = total + g[1 + i]
end
if prate ~= nil then
  p.tokens = p.tokens - total
end

local function provider_wait(rest)
  if prate == nil then
    return math.max(0, p.blk - now)
  end
  return time_to(p, prate, rec, step_need(rest, prate, p.f, pburst, step), now)
end

local out = {g[1], '0'}
local rest_u = caps[1] - g[1]
if rest_u > 0 then
  out[2] = num(provider_wait(rest_u))
end
for i = 1, nd do
  local d = doms[i]
  local rest = d.want - g[1 + i]
  local w = 0
  if rest > 0 then
    w = math.max(time_to(d.b, d.rate, rec, step_need(rest, d.rate, d.b.f, d.burst, step), now),
                 provider_wait(rest))
  end
  table.insert(out, g[1 + i])
  table.insert(out, num(w))
  save_bucket(KEYS[1 + i], d.b, d.rate, d.burst, rec, now)
end
if prate ~= nil then
  save_bucket(KEYS[1], p, prate, pburst, rec, now)
end
return out
