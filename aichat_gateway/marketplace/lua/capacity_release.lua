-- Release one request's lease and correct the counters its take recorded, at most once.
--
-- Corrections apply only when this call removed the lease: a second release (or one after the
-- lease expired) changes nothing, so a `finally` that runs twice cannot refund twice. A counter
-- whose window has ended (key gone) is not recreated; none is taken below zero.
--
-- KEYS  1 leases zset, 2.. counters to correct (the windows of the take)
-- ARGV  1 request id, 2.. the delta for KEYS[2..] in the same order
-- Reply 1 if this call released the lease, else 0
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
for i = 2, #KEYS do
  if tonumber(ARGV[i]) ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('INCRBY', KEYS[i], ARGV[i]) < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    end
  end
end
return 1
