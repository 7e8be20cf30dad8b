-- Deduplicate one enqueue chunk against the campaign's "seen" hash, in one round trip.
--
-- KEYS[1] seen hash (lower-cased address -> row number of its first occurrence)
-- ARGV[1] the chunk's lower-cased addresses, joined by "\n"
-- ARGV[2] their row numbers (decimal), joined by "\n", in the same order
--
-- Two strings rather than two arguments a row: the client packs 2 arguments instead of
-- 10,000 for a chunk of 5,000. The producer never sends an empty address or one holding a
-- newline (check_address refuses CR/LF), so "\n" separates them unambiguously.
--
-- HSETNX each address with its row. An address already present whose first row is this
-- row is a resumed run meeting its own earlier entry, not a duplicate.
-- Returns a flat array: position (1-based, in the chunk) and first row, per duplicate.
local key = KEYS[1]
local out = {}
local rows = string.gmatch(ARGV[2], '[^\n]+')
local pos = 0
for addr in string.gmatch(ARGV[1], '[^\n]+') do
  pos = pos + 1
  local row = rows()
  if redis.call('HSETNX', key, addr, row) == 0 then
    local first = redis.call('HGET', key, addr)
    if first ~= row then
      out[#out + 1] = pos
      out[#out + 1] = first
    end
  end
end
return out
