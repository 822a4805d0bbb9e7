-- GET /api/balance, each request with the next user's pre-minted token
-- (BENCH_TOKENS), so requests spread over all funded users.
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local lib = require("lib")
local users, tokens = lib.load_tokens()
local reqs, n, i = {}, 0, 0
setup = lib.setup

function init(args)
    for k = 1, #tokens do
        reqs[k] = wrk.format("GET", "/api/balance",
                             { ["Authorization"] = "Bearer " .. tokens[k] })
    end
    n = #reqs
    i = (tid or 0) * 7919 % n
end

function request()
    i = i % n + 1
    return reqs[i]
end

done = lib.report
