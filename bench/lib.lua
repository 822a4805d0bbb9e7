-- Shared helpers for the bench/*.lua wrk scripts (ScholarLink Billing).
-- Every script ends with lib.report() as its done(): one machine-readable
-- line that bench/run.sh parses (latencies in microseconds).
local lib = {}

-- "id token" lines written by bench/run.sh (BENCH_TOKENS)
function lib.load_tokens()
    local path = os.getenv("BENCH_TOKENS")
    local users, tokens = {}, {}
    if not path then return users, tokens end
    for line in io.lines(path) do
        local id, tok = line:match("^(%S+)%s+(%S+)$")
        if id then
            users[#users + 1] = id
            tokens[#tokens + 1] = tok
        end
    end
    return users, tokens
end

-- numbering of wrk threads: setup() runs in the main Lua state once per
-- thread before it starts; the value becomes the thread's global `tid`
local nthreads = 0
function lib.setup(thread)
    thread:set("tid", nthreads)
    nthreads = nthreads + 1
end

function lib.report(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d "
        .. "non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
        summary.requests, summary.duration,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        e.status, e.connect, e.read, e.write, e.timeout))
end

return lib
