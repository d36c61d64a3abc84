-- wrk script used by loadtests/bench.py: POST one chat completion per request.
-- The bearer key, the model and streaming come from the environment (BENCH_API_KEY, BENCH_MODEL,
-- BENCH_STREAM=1); done() prints one "BENCH_RESULT {json}" line that bench.py parses.
local key = os.getenv("BENCH_API_KEY") or "sk-bench"
local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"
local stream = os.getenv("BENCH_STREAM") == "1"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = string.format(
  '{"model":"%s","messages":[{"role":"user","content":"Say hello to the benchmark, please."}],'
    .. '"max_tokens":64,"stream":%s}',
  model, stream and "true" or "false")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
