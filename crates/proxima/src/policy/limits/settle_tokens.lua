-- Corrects token buckets once the real usage is known.
-- ARGV[2i-1]: bucket i's capacity per minute; ARGV[2i]: tokens to take on top of the
-- estimate (negative: to give back). A bucket may go below zero; it never exceeds full.
for i = 1, #KEYS do
  local cap = tonumber(ARGV[2 * i - 1])
  local level = level_of(KEYS[i], cap) - tonumber(ARGV[2 * i]) * SCALE
  if level > cap * SCALE then
    level = cap * SCALE
  end
  store(KEYS[i], cap, level)
end
return 1
