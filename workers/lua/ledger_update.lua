-- Move recipients of one batch to new states, idempotently, and keep the counters exact.
--
-- KEYS[1] states hash (index -> state char)   KEYS[2] details hash (index -> JSON)
-- KEYS[3] counts hash (state label -> count)
-- ARGV[1] "1" to allow leaving a final state (operator requeue), else "0"
-- ARGV[2..] triples: index, new state char, detail JSON ("" keeps the old detail)
--
-- A recipient already in a final state stays there unless ARGV[1] == "1": that is what
-- makes a redelivered or concurrently retried batch unable to re-count (or re-send) it.
-- One exception: cancelled -> sent, because a message already on the wire when the
-- operator cancelled was delivered, and the ledger must say what really happened.
-- Returns the number of recipients whose state changed.
local labels = {q='queued', s='sent', d='deferred', f='failed', i='invalid',
                x='suppressed', c='cancelled'}
local final = {s=true, f=true, i=true, x=true, c=true}
local force = ARGV[1] == '1'
local changed = 0
for i = 2, #ARGV, 3 do
  local idx, new, detail = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], idx)
  if old and (force or not final[old] or (old == 'c' and new == 's')) then
    if old ~= new then
      redis.call('HSET', KEYS[1], idx, new)
      redis.call('HINCRBY', KEYS[3], labels[old], -1)
      redis.call('HINCRBY', KEYS[3], labels[new], 1)
      changed = changed + 1
    end
    if detail ~= '' then
      redis.call('HSET', KEYS[2], idx, detail)
    end
  end
end
return changed
