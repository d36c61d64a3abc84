-- Take capacity for one request on one listing, atomically. Every key shares the listing's hash
-- slot ({<prefix>:l:<listing id>}), so this runs unchanged on Redis Cluster.
--
-- The refusal rule mirrors aichat_gateway.marketplace.capacity.violations(): Python derives WHICH
-- limit refused (and when it resets) from the usage this script returns, so the two must agree;
-- tests/integration/test_capacity_redis.py checks them against each other.
--
-- KEYS  1 leases: zset request id -> lease deadline (unix ms); an expired lease is a free slot
--       2 rpm counter, 3 tpm counter (this minute), 4 daily tokens (this UTC day),
--       5 monthly tokens (this UTC month)
-- ARGV  1 now (ms), 2 lease deadline (ms), 3 request id, 4 estimated tokens,
--       5..9 limits: concurrency, rpm, tpm, daily, monthly (-1: no such limit),
--       10 leases key ttl (ms), 11..13 ttl (ms) of the minute, day and month counters
-- Reply {status, in_flight, rpm, tpm, daily, monthly, earliest lease deadline or -1}
--       status 1 admitted, 2 this request already holds a lease (nothing counted twice),
--       0 refused; the usage figures are those seen BEFORE this request.
local now = tonumber(ARGV[1])
local estimated = tonumber(ARGV[4])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local in_flight = redis.call('ZCARD', KEYS[1])
local used = {}
for i = 2, 5 do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end

local function reply(status)
  local earliest = -1
  if status == 0 then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if first[2] then earliest = first[2] end
  end
  return {status, in_flight, used[2], used[3], used[4], used[5], earliest}
end

if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return reply(2)
end

local function over(limit_arg, current, adding)
  local limit = tonumber(ARGV[limit_arg])
  return limit >= 0 and current + adding > limit
end

if over(5, in_flight, 1) or over(6, used[2], 1) or over(7, used[3], estimated)
    or over(8, used[4], estimated) or over(9, used[5], estimated) then
  return reply(0)
end

redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[10]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[10])
end

-- {counter key, its limit's ARGV, amount, its ttl's ARGV}; only limited counters are kept.
local counters = {{2, 6, '1', 11}, {3, 7, ARGV[4], 11}, {4, 8, ARGV[4], 12}, {5, 9, ARGV[4], 13}}
for _, c in ipairs(counters) do
  if tonumber(ARGV[c[2]]) >= 0 then
    redis.call('INCRBY', KEYS[c[1]], c[3])
    redis.call('PEXPIRE', KEYS[c[1]], ARGV[c[4]])
  end
end
return reply(1)
