-- post.lua - wrk script: sends the same prebuilt request body on every request.
--
--   BENCH_BODY=file [BENCH_METHOD=POST] [BENCH_CONTENT_TYPE=application/json] \
--   [BENCH_HEADER_LENGTH=n] wrk -s bench/post.lua --latency URL
--
-- The body is read once (binary-safe) and wrk formats the request once, so the client does no
-- per-request work. BENCH_HEADER_LENGTH sets Inference-Header-Content-Length (the Triton binary
-- tensor extension: the JSON header's length, raw tensor bytes after it). done() prints one
-- machine-readable line for bench/run.sh.

local function env(name, default)
   local v = os.getenv(name)
   if v == nil or v == "" then return default end
   return v
end

local path = assert(os.getenv("BENCH_BODY"), "set BENCH_BODY to the request body file")
local f = assert(io.open(path, "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = env("BENCH_METHOD", "POST")
wrk.headers["Content-Type"] = env("BENCH_CONTENT_TYPE", "application/json")
local hlen = env("BENCH_HEADER_LENGTH", nil)
if hlen then wrk.headers["Inference-Header-Content-Length"] = hlen end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.0f "
         .. "non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean, e.status, e.connect, e.read, e.write,
      e.timeout))
end
