-- Void a buyer's expired holds (deadline < now): those of crashed processes, for buyers who make
-- no new request (hold_take.lua drops them itself otherwise, with the same loop).
--
-- KEYS  1 view hash, 2 deadlines zset, 3 holds hash, 4 key holds hash
-- ARGV  1 now (ms)
-- Reply {holds voided, earliest deadline still open or -1}
local function s(n) return string.format('%d', n) end

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
local freed, dropped = 0, 0
for _, rid in ipairs(expired) do
  local record = redis.call('HGET', KEYS[3], rid)
  if record then
    local amount, key = string.match(record, '^(%d+):(.*)$')
    amount = tonumber(amount)
    freed, dropped = freed + amount, dropped + 1
    if redis.call('HINCRBY', KEYS[4], key, s(-amount)) <= 0 then
      redis.call('HDEL', KEYS[4], key)
    end
    redis.call('HDEL', KEYS[3], rid)
  end
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
end
if freed > 0 and redis.call('HEXISTS', KEYS[1], 'bal') == 1 then
  redis.call('HINCRBY', KEYS[1], 'held', s(-freed))
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {dropped, first[2] or -1}
