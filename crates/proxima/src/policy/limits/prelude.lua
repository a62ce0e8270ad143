-- Before Redis 5, a script must ask for effects replication to write after calling TIME.
if redis.replicate_commands then redis.replicate_commands() end
-- Shared by the scripts: Redis's clock (replicas with skewed clocks agree on it) and token
-- buckets. Levels are in 1/60000 of a unit, so a bucket of `cap` per minute refills `cap`
-- per millisecond; numbers are written with %.0f so large ones keep every digit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local SCALE = 60000

local function level_of(key, cap)
  local full = cap * SCALE
  local state = redis.call('HMGET', key, 'level', 'at')
  if not state[1] then
    return full
  end
  local level = tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * cap
  if level > full then
    return full
  end
  return level
end

local function store(key, cap, level)
  redis.call('HSET', key, 'level', string.format('%.0f', level), 'at', string.format('%.0f', now))
  -- A missing bucket counts as full, so the key may go once it has refilled.
  local ttl = 61000
  if cap > 0 then
    ttl = math.ceil((cap * SCALE - level) / cap) + 1000
  end
  redis.call('PEXPIRE', key, string.format('%.0f', ttl))
end
