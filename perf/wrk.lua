-- wrk script for perf/run.sh.
--   wrk ... -s perf/wrk.lua URL                    one URL (hot runs)
--   wrk ... -s perf/wrk.lua URL -- PATHS THREADS   each request takes the next path from
--       the file PATHS (one per line), thread i taking paths i, i+THREADS, ... so that
--       no two requests of the run ask for the same file until the list wraps (cold runs).
-- At the end it prints one line "WRKJSON {...}" with the exact byte count and duration.

local next_tid = 0
function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
end

local paths = nil
local pos, step = 0, 1

function init(args)
   if args[1] then
      paths = {}
      for line in io.lines(args[1]) do
         if line ~= "" then paths[#paths + 1] = line end
      end
      step = tonumber(args[2] or "1")
      pos = tid or 0
   end
end

function request()
   if not paths then return wrk.request() end
   local p = paths[(pos % #paths) + 1]
   pos = pos + step
   return wrk.format("GET", p)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"bytes":%d,"duration_us":%d,"requests":%d,"errors_connect":%d,' ..
      '"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
      '"latency_p50_ms":%.3f,"latency_p99_ms":%.3f,"latency_max_ms":%.3f}\n',
      summary.bytes, summary.duration, summary.requests, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000))
end
