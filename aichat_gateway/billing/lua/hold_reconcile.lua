-- Repair a buyer's hot view against Postgres: bal := Postgres' balance, uns and held := the sums
-- of the per-request records, and the per-key hold sums rebuilt. Expired holds are dropped first
-- (normal upkeep, so they are subtracted from the "before" figures and not reported as drift).
-- Deadlines without a hold record and hold records without a deadline are dropped as debris.
--
-- The caller guarantees no settlement commit for this buyer is in flight (an advisory lock):
-- otherwise Postgres' balance may already include a charge whose record is still unsettled here.
--
-- KEYS  1 view hash, 2 deadlines zset, 3 holds hash, 4 key holds hash, 5 unsettled hash
-- ARGV  1 now (ms), 2 Postgres balance
-- Reply {0} if the view is not loaded (nothing to repair), else
--       {1, bal, uns, held (before), bal, uns, held (after), 1 if key holds were rebuilt else 0}
local function s(n) return string.format('%d', n) end

if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then
  return {0}
end
local view = redis.call('HMGET', KEYS[1], 'bal', 'uns', 'held')
local bal0, uns0, held0 = tonumber(view[1]), tonumber(view[2] or '0'), tonumber(view[3] or '0')

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, rid in ipairs(expired) do
  local record = redis.call('HGET', KEYS[3], rid)
  if record then
    local amount, key = string.match(record, '^(%d+):(.*)$')
    amount = tonumber(amount)
    held0 = held0 - amount
    if redis.call('HINCRBY', KEYS[4], key, s(-amount)) <= 0 then
      redis.call('HDEL', KEYS[4], key)
    end
    redis.call('HDEL', KEYS[3], rid)
  end
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
end

local held, per_key, open = 0, {}, {}
for _, rid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local record = redis.call('HGET', KEYS[3], rid)
  if record then
    local amount, key = string.match(record, '^(%d+):(.*)$')
    amount = tonumber(amount)
    held = held + amount
    if amount > 0 then
      per_key[key] = (per_key[key] or 0) + amount
    end
    open[rid] = true
  else
    redis.call('ZREM', KEYS[2], rid)
  end
end
local records = redis.call('HKEYS', KEYS[3])
for _, rid in ipairs(records) do
  if not open[rid] then
    redis.call('HDEL', KEYS[3], rid)
  end
end

local uns = 0
for _, charged in ipairs(redis.call('HVALS', KEYS[5])) do
  uns = uns + tonumber(charged)
end

local keys_fixed, stored, seen = 0, redis.call('HGETALL', KEYS[4]), 0
for i = 1, #stored, 2 do
  seen = seen + 1
  if tonumber(stored[i + 1]) ~= per_key[stored[i]] then
    keys_fixed = 1
  end
end
for _ in pairs(per_key) do
  seen = seen - 1
end
if seen ~= 0 then
  keys_fixed = 1
end
if keys_fixed == 1 then
  redis.call('DEL', KEYS[4])
  for key, amount in pairs(per_key) do
    redis.call('HSET', KEYS[4], key, s(amount))
  end
end

local bal = tonumber(ARGV[2])
if bal ~= bal0 or uns ~= uns0 or held ~= held0 or #expired > 0 then
  redis.call('HSET', KEYS[1], 'bal', ARGV[2], 'uns', s(uns), 'held', s(held))
end
return {1, bal0, uns0, held0, bal, uns, held, keys_fixed}
