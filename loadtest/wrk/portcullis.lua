-- wrk script for the load test (loadtest/harness.py runs it).
--
-- TOKEN_FILE: every request carries that one token (`Authorization: Bearer ...`).
-- TOKENS_FILE: each request carries the next token of that pool, one token a line; each wrk
--   thread starts at its own offset so threads do not send the same token together.
-- Neither: no Authorization header.
-- AUTHORIZATION: a literal Authorization value (the malformed-token variant).
-- FORWARD_AUTH: the request is a Traefik ForwardAuth decision request describing the load
--   test's request (X-Forwarded-Method, -Uri, -Host, -Proto, -For).
--
-- At the end one line `LOADTEST {json}` reports requests, errors and latency percentiles (µs).

local thread_count = 0

function setup(thread)
  thread:set("index", thread_count)
  thread_count = thread_count + 1
end

local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if #line > 0 then lines[#lines + 1] = line end
  end
  return lines
end

function init(args)
  local forward_auth = os.getenv("FORWARD_AUTH")
  if forward_auth and #forward_auth > 0 then
    wrk.headers["X-Forwarded-Method"] = "GET"
    wrk.headers["X-Forwarded-Uri"] = "/lists/acme-roadmap/tasks/t1"
    wrk.headers["X-Forwarded-Host"] = "tasks.example.com"
    wrk.headers["X-Forwarded-Proto"] = "http"
    wrk.headers["X-Forwarded-For"] = "10.0.0.7"
  end
  local single = os.getenv("TOKEN_FILE")
  local pool = os.getenv("TOKENS_FILE")
  local literal = os.getenv("AUTHORIZATION")
  if single and #single > 0 then
    wrk.headers["Authorization"] = "Bearer " .. read_lines(single)[1]
  elseif literal and #literal > 0 then
    wrk.headers["Authorization"] = literal
  elseif pool and #pool > 0 then
    tokens = read_lines(pool)
    next_token = (index or 0) * 7919 % #tokens
    request = function()
      next_token = next_token % #tokens + 1
      return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[next_token] })
    end
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'LOADTEST {"requests":%d,"duration_us":%d,"non_2xx_3xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9)))
end
