-- Create a buyer's hot view from their Postgres balance, unless one exists (then change nothing:
-- the existing view already counts requests Postgres has not seen).
--
-- uns and held are summed from the per-request records, normally none: a view is only absent for
-- a new buyer or after Redis lost its data, but if the view alone went missing the records still
-- say what is unsettled and held.
--
-- KEYS  1 view hash, 2 holds hash, 3 unsettled hash
-- ARGV  1 balance (micro-USD, may be negative)
-- Reply 1 if this call created the view, else 0
if redis.call('HEXISTS', KEYS[1], 'bal') == 1 then
  return 0
end
local uns, held = 0, 0
for _, charged in ipairs(redis.call('HVALS', KEYS[3])) do
  uns = uns + tonumber(charged)
end
for _, record in ipairs(redis.call('HVALS', KEYS[2])) do
  held = held + tonumber(string.match(record, '^(%d+):'))
end
redis.call('HSET', KEYS[1], 'bal', ARGV[1], 'uns', string.format('%d', uns), 'held', string.format('%d', held))
return 1
