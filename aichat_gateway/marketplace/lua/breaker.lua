-- One listing's circuit breaker: apply one event atomically, publish routing-relevant changes.
-- A line-for-line twin of aichat_gateway.marketplace.breaker.decide(); the integration tests
-- drive both with the same random event sequences and compare every state.
--
-- State (hash; absent = closed, no failures): mode closed|open|half_open, failures (consecutive,
-- while closed), retry_at (ms: open -> when a probe may go; half_open -> when the probe's slot
-- expires), probe (the probe's token), version (bumped on every published change; never below
-- the time of the change, so it survives the hash expiring).
--
-- KEYS  1 the breaker hash ({<prefix>:l:<listing id>}:breaker)
-- ARGV  1 event allow|success|failure|abandon, 2 now (ms), 3 probe token ('' = not a probe),
--       4 fail_max, 5 reset timeout (ms), 6 probe timeout (ms), 7 hash ttl (ms),
--       8 pub/sub channel, 9 listing id
-- Reply {allowed, is_probe, mode, failures, retry_at, probe, version}
local h = redis.call('HMGET', KEYS[1], 'mode', 'failures', 'retry_at', 'probe', 'version')
local mode = h[1] or 'closed'
local failures = tonumber(h[2] or '0')
local retry_at = tonumber(h[3] or '0')
local probe = h[4] or ''
local version = tonumber(h[5] or '0')
local event, now, token = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local allowed, is_probe, changed, publish = 0, 0, false, false

if event == 'allow' then
  if mode == 'closed' then
    allowed = 1
  elseif now >= retry_at then
    mode, probe, retry_at = 'half_open', token, now + tonumber(ARGV[6])
    allowed, is_probe, publish = 1, 1, true
  end
elseif mode == 'closed' then
  if event == 'success' and failures > 0 then
    failures, changed = 0, true
  elseif event == 'failure' then
    failures, changed = failures + 1, true
    if failures >= tonumber(ARGV[4]) then
      mode, retry_at, publish = 'open', now + tonumber(ARGV[5]), true
    end
  end
elseif mode == 'half_open' and token ~= '' and token == probe then
  if event == 'success' then
    mode, failures, retry_at, probe, publish = 'closed', 0, 0, '', true
  elseif event == 'failure' then
    mode, retry_at, probe, publish = 'open', now + tonumber(ARGV[5]), '', true
  elseif event == 'abandon' then
    mode, retry_at, probe, publish = 'open', now, '', true
  end
end

if publish then
  version = math.max(version + 1, now)
  changed = true
end
if changed then
  redis.call('HSET', KEYS[1], 'mode', mode, 'failures', string.format('%d', failures),
    'retry_at', string.format('%d', retry_at), 'probe', probe, 'version', string.format('%d', version))
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
if publish then
  redis.call('PUBLISH', ARGV[8], string.format('%d %s %d %s', version, mode, retry_at, ARGV[9]))
end
return {allowed, is_probe, mode, failures, retry_at, probe, version}
