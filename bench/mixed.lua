-- Soak mix for the worker-RSS check: 80% GET /health, 15% GET /api/balance,
-- 5% POST /api/usage/reconcile (unique keys as in reconcile.lua).
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local lib = require("lib")
local users, tokens = lib.load_tokens()
local run = os.getenv("BENCH_RUN_ID") or tostring(os.time())
local svc = os.getenv("BENCH_SERVICE_TOKEN") or ""
local counter, n, health, prefix = 0, 0, nil, ""
setup = lib.setup

function init(args)
    n = #users
    prefix = run .. "-m" .. (tid or 0) .. "-"
    health = wrk.format("GET", "/health")
end

function request()
    counter = counter + 1
    local slot = counter % 20
    local k = ((counter * 2 + (tid or 0)) % n) + 1
    if slot < 16 then
        return health
    elseif slot < 19 then
        return wrk.format("GET", "/api/balance", { ["Authorization"] = "Bearer " .. tokens[k] })
    end
    return wrk.format("POST", "/api/usage/reconcile",
        { ["Authorization"] = "Bearer " .. svc, ["Content-Type"] = "application/json" },
        '{"userId":"' .. users[k] .. '","model":"gpt-4o-mini","inputTokens":1000,'
        .. '"outputTokens":500,"idempotencyKey":"' .. prefix .. counter .. '"}')
end

done = lib.report
