-- Resolve one hold, at most once: release what it reserved and charge min(cost, reserved).
--
-- Only a call that finds the hold open changes anything, so a `finally` that runs twice cannot
-- charge twice, and nothing is ever charged beyond what was held. The charge is remembered per
-- request id (until the settlement worker commits it: hold_applied.lua) and added to the key's
-- spend in the windows of now. A hold whose deadline passed but which nothing has swept yet still
-- settles: its money was reserved all along.
--
-- KEYS  1 view hash, 2 deadlines zset, 3 holds hash, 4 key holds hash, 5 unsettled hash
--       (request id -> charged), 6 key spend this UTC day, 7 key spend this UTC month
-- ARGV  1 request id, 2 cost, 3 day counter ttl (ms), 4 month counter ttl (ms)
-- Reply the amount charged, or -1 if the hold was not open
local function s(n) return string.format('%d', n) end

local record = redis.call('HGET', KEYS[3], ARGV[1])
if not record then
  return -1
end
local amount, key = string.match(record, '^(%d+):(.*)$')
amount = tonumber(amount)
local charged = math.min(tonumber(ARGV[2]), amount)

redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HINCRBY', KEYS[4], key, s(-amount)) <= 0 then
  redis.call('HDEL', KEYS[4], key)
end
-- Without a view (it was lost and not reloaded yet) only the records change: `load` and
-- `reconcile` rebuild uns and held from them.
local loaded = redis.call('HEXISTS', KEYS[1], 'bal') == 1
if loaded then
  redis.call('HINCRBY', KEYS[1], 'held', s(-amount))
end
if charged > 0 then
  redis.call('HINCRBY', KEYS[5], ARGV[1], s(charged))
  if loaded then
    redis.call('HINCRBY', KEYS[1], 'uns', s(charged))
  end
  redis.call('HINCRBY', KEYS[6], key, s(charged))
  redis.call('PEXPIRE', KEYS[6], ARGV[3])
  redis.call('HINCRBY', KEYS[7], key, s(charged))
  redis.call('PEXPIRE', KEYS[7], ARGV[4])
end
return charged
