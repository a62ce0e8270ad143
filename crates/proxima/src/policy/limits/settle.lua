-- Settles what a request took once its real usage is known, in one call: corrects its token
-- buckets, then releases its budget reservation and adds the real cost to what was spent.
-- KEYS: NB token buckets, then per budget its counters and leases (as in reserve.lua).
-- ARGV[1]: NB; ARGV[2i], ARGV[2i+1] (i = 1..NB): bucket i's capacity per minute and the tokens
-- to take on top of the estimate (negative: to give back). Then, at o = 2 * NB + 1:
-- ARGV[o+1]: the reservation id; ARGV[o+2]: its amount; ARGV[o+3]: the real cost.
local nb = tonumber(ARGV[1])
for i = 1, nb do
  -- A bucket may go below zero; it never exceeds full.
  local cap = tonumber(ARGV[2 * i])
  local level = level_of(KEYS[i], cap) - tonumber(ARGV[2 * i + 1]) * SCALE
  if level > cap * SCALE then
    level = cap * SCALE
  end
  store(KEYS[i], cap, level)
end

local o = 2 * nb + 1
local id, amount, cost = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
for i = 1, (#KEYS - nb) / 2 do
  local counters, leases = KEYS[nb + 2 * i - 1], KEYS[nb + 2 * i]
  -- Counters that are gone (Redis restarted, period expired) are seeded again from the
  -- ledger, which records this cost: writing here would count it twice, or alone.
  if redis.call('EXISTS', counters) == 1 then
    -- A lease that ran out was already given back by reserve.lua.
    if redis.call('ZREM', leases, id .. ':' .. amount) == 1 and amount ~= '0' then
      redis.call('HINCRBY', counters, 'reserved', '-' .. amount)
    end
    if cost ~= '0' then
      redis.call('HINCRBY', counters, 'spent', cost)
    end
  end
end
return 1
