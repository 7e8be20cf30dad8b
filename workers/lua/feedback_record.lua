-- Record one provider event (workers/feedback/store.py, record_op()).
--
-- KEYS[1]  the event's dedupe key (string with a TTL)
-- KEYS[2]  the campaign batch's events hash (ignored when ARGV[2] is "0")
-- ARGV[1]  dedupe TTL, seconds
-- ARGV[2]  "1" when the event matched a recipient of the ledger, else "0"
-- ARGV[3]  the events-hash field of this event ("<index>|<event key>")
-- ARGV[4]  the event (JSON)
-- ARGV[5]  the recipient's marker field for this kind of event ("<index>#<label>")
--
-- Returns 0 for an event seen before (nothing written), 1 for a new event, 2 for a new
-- event that is the recipient's first of its kind (what the complaint guard counts).
-- One step, so a duplicate delivered concurrently is recorded once, and a failure
-- leaves no dedupe mark without the event.

if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) == false then
  return 0
end
if ARGV[2] ~= '1' then
  return 1
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if redis.call('HSETNX', KEYS[2], ARGV[5], '1') == 1 then
  return 2
end
return 1
