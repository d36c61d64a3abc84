-- Push an open hold's deadline later (long streams), never earlier. A resolved or swept hold
-- stays gone: its money is already free.
--
-- KEYS  1 deadlines zset
-- ARGV  1 request id, 2 new deadline (ms)
-- Reply 1 if the hold was open, else 0
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline then
  return 0
end
if tonumber(deadline) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
end
return 1
