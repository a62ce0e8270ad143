-- Releases a reservation and adds the real cost to what was spent.
-- KEYS as in reserve.lua; ARGV[1]: reservation id; ARGV[2]: its amount; ARGV[3]: real cost.
for i = 1, #KEYS / 2 do
  local counters, leases = KEYS[2 * i - 1], KEYS[2 * i]
  -- Counters that are gone (Redis restarted, period expired) are seeded again from the
  -- ledger, which records this cost: writing here would count it twice, or alone.
  if redis.call('EXISTS', counters) == 1 then
    -- A lease that ran out was already given back by reserve.lua.
    if redis.call('ZREM', leases, ARGV[1] .. ':' .. ARGV[2]) == 1 and ARGV[2] ~= '0' then
      redis.call('HINCRBY', counters, 'reserved', '-' .. ARGV[2])
    end
    if ARGV[3] ~= '0' then
      redis.call('HINCRBY', counters, 'spent', ARGV[3])
    end
  end
end
return 1
