-- The settlement worker committed these requests' charges to Postgres: move each from "unsettled"
-- into the balance (uns -= charged, bal -= charged) and forget it. A request id not remembered
-- (applied before, or never charged) changes nothing, so re-delivery after a crash is harmless.
--
-- KEYS  1 view hash, 2 unsettled hash
-- ARGV  1.. request ids
-- Reply the number of request ids applied by this call
local total, applied = 0, 0
for _, rid in ipairs(ARGV) do
  local charged = redis.call('HGET', KEYS[2], rid)
  if charged then
    redis.call('HDEL', KEYS[2], rid)
    total, applied = total + tonumber(charged), applied + 1
  end
end
if total ~= 0 and redis.call('HEXISTS', KEYS[1], 'bal') == 1 then
  local minus = string.format('%d', -total)
  redis.call('HINCRBY', KEYS[1], 'uns', minus)
  redis.call('HINCRBY', KEYS[1], 'bal', minus)
end
return applied
