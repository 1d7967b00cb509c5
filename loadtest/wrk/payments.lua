-- wrk script: a unique payment per request, so payroute is measured on its
-- real routing path (idempotency never replays: every order id is new).
--
--   wrk -t2 -c64 -d10s -s loadtest/wrk/payments.lua http://127.0.0.1:18080/v1/payments -- 1000
--
-- Arguments (after --): MERCHANTS [ACTIVE]: merchants configured
-- (m-0000000 .. m-<N-1>, as loadtest/gen_config.py names them; default 1000)
-- and how many of them send traffic (default all), spread evenly over the
-- configured id range.
-- Every target (mock direct, nginx, HAProxy, payroute) gets the same requests:
-- POST, X-Merchant-Id, a ~90-byte JSON body with amount, currency, order id.
-- At the end one line `WRKJSON {...}` carries req/s and p50/p90/p99/p99.9 in
-- microseconds, plus socket errors and `errors_status` (answers >= 400; no
-- response() hook, which would slow wrk down for every target), for bench.sh.

local threads = {}
local counter = 1

function setup(thread)
  thread:set("tid", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

local currencies = { "CNY", "CNY", "CNY", "USD", "EUR" }
local amounts = { 100, 1250, 9900, 25000, 120000, 499 }

function init(args)
  merchants = tonumber(args[1] or "1000") or 1000
  active = math.min(tonumber(args[2] or "") or merchants, merchants)
  stride = math.floor(merchants / active)
  -- A run prefix: two runs against one proxy never reuse an order id.
  math.randomseed(os.time() * 1000 + tid)
  prefix = string.format("w%x%04x-%d-", os.time(), math.random(0, 65535), tid)
  n = 0
end

function request()
  n = n + 1
  local m = math.random(0, active - 1) * stride
  local body = string.format('{"amount":%d,"currency":"%s","order_id":"%s%d","note":"wrk"}',
    amounts[(n % #amounts) + 1], currencies[(n % #currencies) + 1], prefix, n)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Merchant-Id"] = string.format("m-%07d", m),
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"errors_status":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
