-- May a worker send the next chunk of a batch? (workers/pause.py, chunk_gate())
--
-- KEYS[1]  the campaign record hash
-- KEYS[2]  the campaign's paused-batches set
-- ARGV[1]  the batch number
--
-- Returns "cancelled", "paused" (and the batch is now in the paused set) or "go".
-- Checking the flag and setting the batch aside in one step is what makes resume safe:
-- resume clears the flag and empties the set in one step too, so a batch is either seen
-- paused and put in the set before resume takes the set, or not seen paused at all.

if redis.call('HEXISTS', KEYS[1], 'cancelled') == 1 then
  return 'cancelled'
end
if redis.call('HEXISTS', KEYS[1], 'paused') == 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
  return 'paused'
end
return 'go'
