-- wrk script: one pre-made request per line of a file, each line sent once.
--
--   wrk -t2 -c64 -d10s -s loadtest/wrk/lines.lua http://127.0.0.1:18080/mapi.php -- FILE POST 2
--   wrk -t2 -c32 -d60s -s loadtest/wrk/lines.lua http://127.0.0.1:18080 -- FILE GET 2 stop
--
-- For requests a load generator cannot build cheaply itself: epay's
-- `/mapi.php` orders carry an MD5 signature over their own order id, and a
-- gateway's notification one over payroute's trade number. loadtest/epay.sh
-- signs them beforehand (loadtest/epay_gen.py), so wrk spends the same few
-- microseconds on a signed order as on a JSON payment (payments.lua) and the
-- comparison is of payroute, not of the generators.
--
-- Arguments (after --): FILE, METHOD, THREADS (wrk's -t: a thread's Lua
-- state cannot see how many there are) and STOP.
--   POST: each line is a form body (application/x-www-form-urlencoded), sent
--         to the URL's path.
--   GET:  each line is a path with its query string.
-- Thread t of T takes lines t, t+T, t+2T, ... so no line is sent twice (every
-- order id is new: the idempotency store never replays). A thread that has
-- sent all its lines sends `GET /-/lines-exhausted` instead (payroute
-- answers 404 unknown_route: it changes nothing and shows up as a non-2xx
-- in errors_status), so running out is loud, never a replay.
-- STOP = "stop": send nothing once the lines are sent (a delay() hook),
-- count answers (a response() hook; both slow wrk down: for runs that must
-- make exactly every line, not for throughput) and stop the thread once
-- all of its lines are answered. wrk itself still runs its -d (then only an
-- upper bound) unless sent SIGINT, as epay.sh does when payroute's counter
-- says all are done.
-- At the end one line `WRKJSON {...}` as payments.lua prints, plus `lines`
-- (made available to this run) and `exhausted` (threads that ran out).

local threads = {}
local counter = 1

function setup(thread)
  thread:set("tid", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local file = args[1]
  method = args[2] or "POST"
  local nthreads = tonumber(args[3] or "") or 1
  local stop = args[4] == "stop"
  -- tid is 1-based; every thread counts the file's lines itself.
  reqs, n, answered = {}, 0, 0
  -- wrk calls the first thread's request() once before the run, only to
  -- check it (script_verify_request): that call must not use up a line.
  if tid == 1 then n = -1 end
  local i = 0
  for line in io.lines(file) do
    if line ~= "" then
      if i % nthreads == tid - 1 then
        if method == "GET" then
          reqs[#reqs + 1] = wrk.format("GET", line)
        else
          reqs[#reqs + 1] = wrk.format(method, nil, {["Content-Type"] = "application/x-www-form-urlencoded"}, line)
        end
      end
      i = i + 1
    end
  end
  -- Read by done() through thread:get.
  lines, exhausted = #reqs, 0
  exhausted_req = wrk.format("GET", "/-/lines-exhausted")
  if stop then
    -- A connection whose thread has sent every line waits instead of
    -- sending the exhausted request. delay() runs before each request(),
    -- but a 0 delay is a timer: another connection may send in between,
    -- so delay() reserves the line its connection will send.
    local reserved = 0
    delay = function()
      if reserved >= #reqs then return 3600000 end
      reserved = reserved + 1
      return 0
    end
    response = function(status, headers, body)
      answered = answered + 1
      if answered >= #reqs then wrk.thread:stop() end
    end
  end
end

function request()
  n = n + 1
  if n == 0 then return reqs[1] or exhausted_req end
  local r = reqs[n]
  if r then return r end
  exhausted = 1
  return exhausted_req
end

function done(summary, latency, requests)
  local lines, exhausted = 0, 0
  for _, t in ipairs(threads) do
    lines = lines + (t:get("lines") or 0)
    exhausted = exhausted + (t:get("exhausted") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"errors_status":%d,"lines":%d,"exhausted":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, e.connect, e.read, e.write, e.timeout, e.status, lines, exhausted))
end
