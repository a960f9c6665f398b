-- wrk script for bench_ingest.py: every request a new participant (or, for status uploads,
-- the participants of the previous run with the same prefix), from a JSON template.
-- Usage: wrk -s wrk_upload.lua URL -- TEMPLATE_FILE PREFIX
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local handle = assert(io.open(args[1], "rb"))
  template = handle:read("*a")
  handle:close()
  prefix = args[2]
  counter = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  local pid = prefix .. "t" .. tid .. "n" .. counter
  local body = string.gsub(template, "@@PID@@", pid)
  return wrk.format("POST", "/api/upload-user-data", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"timeouts":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
