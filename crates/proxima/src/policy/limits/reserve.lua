-- Reserves a request's maximum cost against every budget, or against none.
-- KEYS[2i-1]: budget i's counters (hash: spent, reserved), KEYS[2i]: its leases (sorted set of
-- "id:amount" by expiry), so reservations of a replica that died are given back.
-- ARGV[1]: maximum cost (nano-dollars); ARGV[2]: reservation id; ARGV[3]: lease in ms;
-- ARGV[3i+1]: budget i's limit; ARGV[3i+2]: when its keys expire (epoch ms, 0: never);
-- ARGV[3i+3]: what the ledger says was spent in its period ('' when not looked up).
-- Returns {0} when reserved, {1, i, spent, reserved} when budget i refuses, and {2, i...}
-- when budgets i... have no counters yet: look them up in the ledger and call again.
local n = #KEYS / 2
local missing = {2}
for i = 1, n do
  local counters, leases = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', counters) == 0 then
    local seed = ARGV[3 * i + 3]
    if seed == '' then
      missing[#missing + 1] = i
    else
      -- Only when missing: another replica may have seeded it meanwhile.
      redis.call('HSET', counters, 'spent', seed, 'reserved', '0')
      redis.call('DEL', leases)
    end
  end
end
if #missing > 1 then
  return missing
end

local cost = tonumber(ARGV[1])
for i = 1, n do
  local counters, leases = KEYS[2 * i - 1], KEYS[2 * i]
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  if #expired > 0 then
    for _, lease in ipairs(expired) do
      local amount = string.match(lease, ':(%d+)$')
      if amount and amount ~= '0' then
        redis.call('HINCRBY', counters, 'reserved', '-' .. amount)
      end
    end
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  end
  local state = redis.call('HMGET', counters, 'spent', 'reserved')
  local spent, reserved = state[1] or '0', state[2] or '0'
  if tonumber(spent) + tonumber(reserved) + cost > tonumber(ARGV[3 * i + 1]) then
    return {1, i, spent, reserved}
  end
end

for i = 1, n do
  local counters, leases = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', counters, 'reserved', ARGV[1])
  redis.call('ZADD', leases, string.format('%.0f', now + tonumber(ARGV[3])), ARGV[2] .. ':' .. ARGV[1])
  local expire_at = ARGV[3 * i + 2]
  if expire_at ~= '0' then
    redis.call('PEXPIREAT', counters, expire_at)
    redis.call('PEXPIREAT', leases, expire_at)
  end
end
return {0}
