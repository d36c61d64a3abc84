-- Push a live lease's deadline later (long streams). An expired or released lease stays gone:
-- its slot may already be someone else's.
--
-- KEYS  1 leases zset
-- ARGV  1 request id, 2 now (ms), 3 new deadline (ms), 4 leases key ttl (ms)
-- Reply 1 if the lease was live (and now ends no earlier than ARGV[3]), else 0
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= tonumber(ARGV[2]) then
  return 0
end
if tonumber(score) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
