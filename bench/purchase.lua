-- POST /api/purchases (Stripe Checkout) with user tokens: the background
-- "purchase flood" while the Stripe stand-in stalls.
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local lib = require("lib")
local users, tokens = lib.load_tokens()
local i = 0
setup = lib.setup

function request()
    i = i % #tokens + 1
    return wrk.format("POST", "/api/purchases",
                      { ["Authorization"] = "Bearer " .. tokens[i],
                        ["Content-Type"] = "application/json" },
                      '{"packageCode":"starter"}')
end

done = lib.report
