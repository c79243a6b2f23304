-- wrk script: send the requests listed in the file named by BENCH_TARGETS, in turn.
--
-- One request a line, tab-separated: METHOD, PATH, BODY (may be empty), then any number of
-- "Name: value" headers (the bearer token among them). Each wrk thread starts at its own
-- place in the list. done() prints one line, "BENCH_RESULT {json}", that bench/loadgen.py
-- reads. No response() callback: wrk then skips handing bodies to Lua.

local requests_list = {}
local position = 0
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
end

local function split(line)
   local fields = {}
   for field in (line .. "\t"):gmatch("([^\t]*)\t") do
      table.insert(fields, field)
   end
   return fields
end

function init(args)
   local path = os.getenv("BENCH_TARGETS")
   for line in io.lines(path) do
      if line ~= "" then
         local f = split(line)
         local headers = {}
         for i = 4, #f do
            local name, value = f[i]:match("^([^:]+):%s*(.*)$")
            if name then headers[name] = value end
         end
         local body = nil
         if f[3] ~= "" then
            body = f[3]
            headers["Content-Type"] = "application/json"
         end
         table.insert(requests_list, wrk.format(f[1], f[2], headers, body))
      end
   end
   position = ((thread_index or 0) * 7919) % #requests_list
end

function request()
   position = position % #requests_list + 1
   return requests_list[position]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"min": %d, "max": %d, "mean": %.1f, "stdev": %.1f, ' ..
      '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.max, latency.mean, latency.stdev,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
