-- wrk script for the sign-up benchmark: every request POSTs JSON with an address never used before.
--
--   wrk -t2 -c32 -d10s -s bench/subscribe.lua http://127.0.0.1:8000 -- <prefix>
--
-- Addresses are "<prefix>-t<thread>-<counter>@example.com"; give every wrk run against the same database its
-- own prefix. At the end one line starting with "BENCH_RESULT " carries the figures as JSON (latencies in
-- microseconds, the count of responses by status across all threads).

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_id", #threads)
end

function init(args)
   prefix = args[1] or "bench"
   counter = 0
   statuses = {}
   headers = { ["Content-Type"] = "application/json" }
end

function request()
   counter = counter + 1
   local body = string.format(
      '{"email": "%s-t%d-%d@example.com", "name": "Bench"}', prefix, thread_id, counter
   )
   return wrk.format("POST", "/subscriptions", headers, body)
end

function response(status, response_headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local by_status = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         by_status[status] = (by_status[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(by_status) do
      table.insert(parts, string.format('"%d": %d', status, count))
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
         .. '"max_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"statuses": {%s}}\n',
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      table.concat(parts, ", ")
   ))
end
