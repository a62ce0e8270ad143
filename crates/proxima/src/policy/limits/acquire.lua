-- Takes from every bucket in KEYS, or from none.
-- ARGV[2i-1]: bucket i's capacity per minute; ARGV[2i]: what the request takes from it.
-- Returns {granted (1/0), refusing bucket (0 if none), its wait in ms, level of each bucket...}
-- with levels after the debit when granted.
local levels, needs, caps = {}, {}, {}
local refused, wait = 0, 0
for i = 1, #KEYS do
  caps[i] = tonumber(ARGV[2 * i - 1])
  needs[i] = tonumber(ARGV[2 * i]) * SCALE
  levels[i] = level_of(KEYS[i], caps[i])
  if levels[i] < needs[i] then
    -- The caller refuses needs above capacity, so cap > 0 here.
    local w = math.ceil((needs[i] - levels[i]) / caps[i])
    if w > wait then
      refused, wait = i, w
    end
  end
end
local reply = {0, refused, wait}
if refused == 0 then
  reply[1] = 1
  for i = 1, #KEYS do
    levels[i] = levels[i] - needs[i]
    store(KEYS[i], caps[i], levels[i])
  end
end
for i = 1, #KEYS do
  reply[3 + i] = levels[i]
end
return reply
