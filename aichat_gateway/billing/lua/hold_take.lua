-- Reserve a request's worst-case cost against a buyer's spendable amount and its key's caps,
-- atomically. Every key shares the buyer's hash slot ({<prefix>:b:<buyer id>}), so this runs
-- unchanged on Redis Cluster.
--
-- The refusal rule mirrors aichat_gateway.billing.holdplan.refusal(): Python derives WHICH rule
-- refused from the figures this script returns, and raises if the two ever disagree.
--
-- KEYS  1 view hash (bal, uns, held; absent = cold), 2 deadlines zset (request id -> unix ms),
--       3 holds hash (request id -> "<amount>:<key id>"), 4 key holds hash (key id -> open holds),
--       5 key spend this UTC day (key id -> micro), 6 key spend this UTC month
-- ARGV  1 now (ms), 2 deadline (ms), 3 request id, 4 amount, 5 key id,
--       6 daily cap, 7 monthly cap (-1: no such cap)
-- Reply {code, bal, uns, held, key day spend, key month spend, key held}; code -1 cold (figures 0),
--       0 refused, 1 held, 2 this request already holds (nothing reserved twice). The figures are
--       those seen BEFORE this request, after expired holds were dropped.
local function s(n) return string.format('%d', n) end

if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then
  return {-1, 0, 0, 0, 0, 0, 0}
end

-- Expired holds (deadline < now) belong to crashed or stuck processes: void them (hold_sweep.lua
-- does the same for buyers who stop sending requests).
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
if #expired > 0 then
  local freed = 0
  for _, rid in ipairs(expired) do
    local record = redis.call('HGET', KEYS[3], rid)
    if record then
      local amount, key = string.match(record, '^(%d+):(.*)$')
      amount = tonumber(amount)
      freed = freed + amount
      if redis.call('HINCRBY', KEYS[4], key, s(-amount)) <= 0 then
        redis.call('HDEL', KEYS[4], key)
      end
      redis.call('HDEL', KEYS[3], rid)
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'held', s(-freed))
end

local view = redis.call('HMGET', KEYS[1], 'bal', 'uns', 'held')
local bal, uns, held = tonumber(view[1]), tonumber(view[2] or '0'), tonumber(view[3] or '0')
local key = ARGV[5]
local day = tonumber(redis.call('HGET', KEYS[5], key) or '0')
local month = tonumber(redis.call('HGET', KEYS[6], key) or '0')
local key_held = tonumber(redis.call('HGET', KEYS[4], key) or '0')

local function reply(code)
  return {code, bal, uns, held, day, month, key_held}
end

if redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  return reply(2)
end

local amount = tonumber(ARGV[4])
local function over(cap_arg, spent)
  local cap = tonumber(ARGV[cap_arg])
  return cap >= 0 and spent + key_held + amount > cap
end

if amount > bal - uns - held or over(7, month) or over(6, day) then
  return reply(0)
end

redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4] .. ':' .. key)
if amount > 0 then  -- a key's hold sum is absent rather than 0 (reconcile compares them)
  redis.call('HINCRBY', KEYS[4], key, ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'held', ARGV[4])
end
return reply(1)
