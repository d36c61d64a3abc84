-- Add a committed Postgres credit (or debit: a refund, a dispute) to a loaded hot view. An absent
-- view is left absent: the next `load` reads the balance that already includes this amount.
--
-- KEYS  1 view hash
-- ARGV  1 amount (micro-USD, may be negative)
-- Reply 1 if the view was loaded, else 0
if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'bal', ARGV[1])
return 1
