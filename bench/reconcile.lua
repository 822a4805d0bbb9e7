-- POST /api/usage/reconcile with the service token (BENCH_SERVICE_TOKEN).
-- Every request has a unique idempotency key: run id (random, per
-- bench/run.sh invocation and phase) + wrk thread id + a per-thread counter,
-- so no request is an idempotent replay. Users rotate over all funded users
-- (BENCH_TOKENS), so concurrent requests rarely wait on the same account row.
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local lib = require("lib")
local users = lib.load_tokens()
local run = os.getenv("BENCH_RUN_ID") or tostring(os.time())
local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"
local headers = {
    ["Authorization"] = "Bearer " .. (os.getenv("BENCH_SERVICE_TOKEN") or ""),
    ["Content-Type"] = "application/json",
}
local counter, n, prefix = 0, 0, ""
local nthr = tonumber(os.getenv("BENCH_THREADS") or "2")
setup = lib.setup

function init(args)
    n = #users
    prefix = run .. "-t" .. (tid or 0) .. "-"
    counter = 0
end

function request()
    counter = counter + 1
    -- threads interleave over the users: thread t takes t, t+T, t+2T, ...
    local u = users[((counter * nthr + (tid or 0)) % n) + 1]
    local body = '{"userId":"' .. u .. '","model":"' .. model
        .. '","inputTokens":1000,"outputTokens":500,"idempotencyKey":"'
        .. prefix .. counter .. '"}'
    return wrk.format("POST", "/api/usage/reconcile", headers, body)
end

done = lib.report
