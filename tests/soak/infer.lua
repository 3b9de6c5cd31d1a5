-- infer.lua - wrk script of the soak test (tests/soak/soak.py): POSTs one KServe v2 JSON body
-- (SOAK_BODY, by default examples/infer_3.json) on every request and checks every answer: a 200
-- whose body names the model (SOAK_MODEL, default digits) and has outputs. done() prints one
-- machine-readable line that soak.py parses:
--
--   SOAK_WRK requests=N ok=N bad=N non2xx=N connect=N read=N write=N timeout=N p50_us=N ...
--
--   SOAK_BODY=examples/infer_3.json wrk -t2 -c64 -d60s -s tests/soak/infer.lua \
--       http://127.0.0.1:PORT/v2/models/digits/infer

local path = os.getenv("SOAK_BODY") or "examples/infer_3.json"
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local want = '"model_name":"' .. (os.getenv("SOAK_MODEL") or "digits") .. '"'
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   ok, bad, first_bad = 0, 0, ""
end

function response(status, headers, body)
   if status == 200 and body:find(want, 1, true) and body:find('"outputs":[', 1, true) then
      ok = ok + 1
   else
      bad = bad + 1
      if first_bad == "" then
         first_bad = string.format("%d %s", status, body:sub(1, 200):gsub("%s", " "))
      end
   end
end

function done(summary, latency, requests)
   local nok, nbad, example = 0, 0, ""
   for _, t in ipairs(threads) do
      nok = nok + t:get("ok")
      nbad = nbad + t:get("bad")
      if example == "" then example = t:get("first_bad") end
   end
   local e = summary.errors
   io.write(string.format(
      "SOAK_WRK requests=%d ok=%d bad=%d non2xx=%d connect=%d read=%d write=%d timeout=%d "
         .. "duration_us=%d p50_us=%d p99_us=%d max_us=%d\n",
      summary.requests, nok, nbad, e.status, e.connect, e.read, e.write, e.timeout,
      summary.duration, latency:percentile(50), latency:percentile(99), latency.max))
   if example ~= "" then io.write("SOAK_WRK_FIRST_BAD " .. example .. "\n") end
end
