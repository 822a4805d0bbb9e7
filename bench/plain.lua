-- GET the URL given to wrk (return-200 baseline, /health); only reports.
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local lib = require("lib")
done = lib.report
