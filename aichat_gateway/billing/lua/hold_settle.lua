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
-- ARGV  1 request id, 2 cost, 3 day counter ttl (ms), 4 month counter ttl (ms),
--       5 late cap: -1, or what the request had held, to charge even if its hold was swept
-- Reply the amount charged, or -1 if the hold was not open (and no late charge was asked for)
--
-- A late charge: the request outlived its hold's deadline and the sweeper voided it, yet it was
-- served and its usage event bills it. Recording the charge as unsettled (once per request id)
-- keeps the hot view equal to Postgres through settlement and reconciliation alike.
local function s(n) return string.format('%d', n) end

local record = redis.call('HGET', KEYS[3], ARGV[1])
if not record then
  local cap = tonumber(ARGV[5] or '-1')
  if cap < 0 then
    return -1
  end
  local late = math.min(tonumber(ARGV[2]), cap)
  if late > 0 and redis.call('HSETNX', KEYS[5], ARGV[1], s(late)) == 1 then
    if redis.call('HEXISTS', KEYS[1], 'bal') == 1 then
      redis.call('HINCRBY', KEYS[1], 'uns', s(late))
    end
    return late
  end
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
