-- wrk script for the scaling table: requests spread over N distinct routes (/route0 ...
-- /route<N-1>, round robin per connection thread), `wrk ... -s routes.lua URL -- N`; prints
-- the same JSON line as report.lua.
local requests = {}
local n = 0
local i = 0

init = function(args)
  local count = tonumber(args[1] or "10")
  for k = 0, count - 1 do
    requests[k + 1] = wrk.format(nil, "/route" .. k)
  end
  n = count
end

request = function()
  i = i % n + 1
  return requests[i]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
