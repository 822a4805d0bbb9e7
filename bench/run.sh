#!/usr/bin/env bash
# ScholarLink Billing benchmark: one command, one machine, one report.
#
#   bench/run.sh            the whole benchmark (about 5 minutes on 2 cores)
#   bench/run.sh profile    set up the same way, then profile reconcile:
#                           perf (cpu-clock, system-wide) and callgrind on a
#                           single nginx process; reports in bench/results/
#   bench/run.sh sqlprofile set up the same way, then profile the stored
#                           functions: pg_stat_statements (track = all),
#                           track_functions, auto_explain of nested
#                           statements, perf on one backend; report in
#                           bench/results/sqlprofile.md
#   bench/run.sh stall      only the Stripe-stall scenario, BENCH_REPEAT times
#
# What it does (docs/benchmarks.md explains the choices):
#   * a fresh PostgreSQL 15 (t/pgserver.sh) in a temp dir, switched back to
#     DEFAULT durability (fsync, full_page_writes, synchronous_commit on:
#     t/pgserver.sh turns the first two off for tests), migrated, granted;
#   * nginx + build/ngx_http_billing_module.so on a free loopback port,
#     worker_processes = nproc, no rate limit, a generated RS256 key pair;
#   * BENCH_USERS users funded through billing.api_stripe_event (the webhook
#     crediting path), user tokens and a service token minted with Crypt::JWT;
#   * wrk (64 connections, 2 threads, --latency): return 200, /health,
#     /api/balance, /api/usage/reconcile;
#   * pgbench, same database, at the pool's maximum concurrency (workers x
#     pool max): the module's own statements (api_balance, api_reconcile)
#     and the LEAN baselines written by hand with the same guarantees
#     (bench/*-lean.pgbench); reconcile also at 64 clients;
#   * worker RSS before load and after a soak; /health p99 while a stalled
#     Stripe stand-in holds purchases and while the database is stopped.
# Results: bench/results/latest.md and latest.png (throughput and latency
# percentiles per scenario, gnuplot), and stdout.
#
# Knobs (environment): BENCH_DURATION (12 s per measurement), BENCH_CONNECTIONS
# (64), BENCH_THREADS (2), BENCH_USERS (256), BENCH_WORKERS (nproc),
# BENCH_POOL_MAX (10 per worker), BENCH_SOAK (60 s), BENCH_STALL (8 s),
# BENCH_NGINX_MAIN (extra main-context lines, e.g. worker_rlimit_core),
# BENCH_NGINX_HTTP (extra http-context lines), BENCH_BATCH (N: adds
# "billing_batch max=N;", for a module that has that directive),
# BENCH_WORKDIR (parent of the temp dir, default /var/tmp: must not be tmpfs,
# or fsync means nothing), BENCH_KEEP=1 keeps the temp dir.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
MODULE="$ROOT/build/ngx_http_billing_module.so"
NGINX_BIN=/usr/sbin/nginx
PGSERVER="$ROOT/t/pgserver.sh"

DURATION=${BENCH_DURATION:-12}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
NUSERS=${BENCH_USERS:-256}
WORKERS=${BENCH_WORKERS:-$(nproc)}
POOL_MAX=${BENCH_POOL_MAX:-10}
SOAK=${BENCH_SOAK:-60}
STALL=${BENCH_STALL:-8}
UID0=1000000              # user ids are UID0+1 .. UID0+NUSERS (numeric: see reconcile.pgbench)
CREDITS=100000000000      # micros per user ($100,000): far more than a run spends
RESULTS="$BENCH_DIR/results/latest.md"
CHART="$BENCH_DIR/results/latest.png"
MODE=${1:-all}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

WORK=""
NGINX_PREFIX=""
STANDIN_PID=""
BG_PIDS=()

cleanup() {
    local rc=$? pid
    set +e
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    stop_nginx
    if [ -n "$STANDIN_PID" ]; then
        kill "$STANDIN_PID" 2>/dev/null
        wait "$STANDIN_PID" 2>/dev/null
    fi
    if [ -n "$WORK" ] && [ -d "$WORK/pg/data" ]; then
        "$PGSERVER" stop "$WORK/pg" >/dev/null 2>&1
    fi
    if [ -n "$WORK" ] && [ "${BENCH_KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
    elif [ -n "$WORK" ]; then
        log "kept $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'log "failed: line $LINENO: $BASH_COMMAND"' ERR

# ------------------------------------------------------------------ set-up

need_tools() {
    if ! command -v wrk >/dev/null; then
        [ "$(id -u)" = 0 ] || die "wrk is missing (apt-get install wrk)"
        log "installing wrk"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
    fi
    if [ ! -f "$MODULE" ]; then
        log "no $MODULE yet: ./build.sh build"
        "$ROOT/build.sh" build
    fi
    if ! command -v gnuplot >/dev/null; then
        [ "$(id -u)" = 0 ] || die "gnuplot is missing (apt-get install gnuplot-nox)"
        log "installing gnuplot-nox"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null; }
    fi
    local t
    for t in pgbench psql openssl perl curl "$NGINX_BIN"; do
        command -v "$t" >/dev/null || die "$t is missing (./build.sh deps)"
    done
    perl -MCrypt::JWT -e1 2>/dev/null || die "Perl Crypt::JWT is missing (./build.sh deps)"
}

make_workdir() {
    local parent=${BENCH_WORKDIR:-/var/tmp}
    if [ "$(findmnt -n -o FSTYPE -T "$parent" 2>/dev/null)" = tmpfs ]; then
        die "$parent is tmpfs: fsync would be a no-op; set BENCH_WORKDIR to a disk"
    fi
    WORK=$(mktemp -d "$parent/billing-bench.XXXXXX")
    chmod 755 "$WORK"
    # nginx loads a private copy: ./build.sh build rewrites build/*.so in
    # place, and a running nginx whose mapped module changes under it crashes
    cp "$MODULE" "$WORK/module.so"
    MODULE_COPY="$WORK/module.so"
    MODULE_SHA=$(sha256sum "$MODULE_COPY" | cut -c1-12)
}

free_port() {
    perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
        LocalPort => 0, Listen => 1) or die; print $s->sockport, "\n"'
}

admin_sql() {
    psql -X -q -At -v ON_ERROR_STOP=1 -d "$BILLING_TEST_ADMIN_URL" "$@"
}

start_database() {
    log "PostgreSQL: fresh cluster in $WORK/pg"
    "$PGSERVER" start "$WORK/pg" >/dev/null
    # shellcheck disable=SC1091
    . "$WORK/pg/env"
    # t/pgserver.sh writes fsync=off and full_page_writes=off into
    # postgresql.conf for the tests; ALTER SYSTEM (postgresql.auto.conf) wins
    # over it. All three are reloadable (sighup), no restart needed.
    admin_sql -c "ALTER SYSTEM SET fsync = on" \
              -c "ALTER SYSTEM SET full_page_writes = on" \
              -c "ALTER SYSTEM SET synchronous_commit = on" \
              -c "SELECT pg_reload_conf()" >/dev/null
    local got=""
    for _ in $(seq 1 50); do
        got=$(admin_sql -c "SELECT current_setting('fsync') || ',' || current_setting('full_page_writes')
                            || ',' || current_setting('synchronous_commit')")
        [ "$got" = "on,on,on" ] && break
        sleep 0.1
    done
    [ "$got" = "on,on,on" ] || die "durability settings did not take effect (fsync,fpw,sc = $got)"
    PG_DURABILITY=$got
    PG_VERSION=$(admin_sql -c "SHOW server_version")
    log "durability: fsync=on full_page_writes=on synchronous_commit=on (server $PG_VERSION)"
    "$ROOT/sql/migrate.sh" "$BILLING_TEST_ADMIN_URL" >/dev/null
    "$PGSERVER" grant "$WORK/pg" >/dev/null
}

make_keys_and_tokens() {
    log "RS256 key pair, $NUSERS user tokens, a service token"
    (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
        -out "$WORK/jwt-private.pem" 2>/dev/null)
    openssl pkey -in "$WORK/jwt-private.pem" -pubout -out "$WORK/jwt-public.pem"
    perl -MCrypt::JWT=encode_jwt -e '
        my ($keyf, $uid0, $n, $tokf, $svcf) = @ARGV;
        open my $f, "<", $keyf or die; my $k = do { local $/; <$f> };
        my $now = time;
        my $mint = sub {
            my %c = (iss => "https://student-pilot.replit.app",
                     aud => "https://billing.scholarlink.app",
                     sub => $_[0], iat => $now, exp => $now + 4 * 3600);
            $c{scope} = $_[1] if defined $_[1];
            encode_jwt(payload => \%c, alg => "RS256", key => \$k);
        };
        open my $t, ">", $tokf or die;
        for my $i (1 .. $n) {
            my $id = sprintf "%d", $uid0 + $i;   # a JSON string, not a number
            print $t $id, " ", $mint->($id), "\n";
        }
        close $t;
        open my $s, ">", $svcf or die;
        print $s $mint->("ai-backend", "billing:usage");
        close $s;
    ' "$WORK/jwt-private.pem" "$UID0" "$NUSERS" "$WORK/tokens.txt" "$WORK/service.token"
    printf 'sk_test_bench_only' > "$WORK/stripe.key"
}

fund_users() {
    log "funding $NUSERS users with $CREDITS micros each (billing.api_stripe_event)"
    # the crediting path of BillingTest::fund_user: a purchase row, then the
    # payment_intent.succeeded event exactly as the webhook hands it over
    local ok
    ok=$(admin_sql -v uid0="$UID0" -v n="$NUSERS" -v credits="$CREDITS" <<'SQL'
INSERT INTO billing.purchases (user_id, package_code, amount_cents, credits_micros)
SELECT (:uid0 + g)::text, 'pro', 5000, :credits FROM generate_series(1, :n) g;
SELECT count(*) FROM (
    SELECT (billing.api_stripe_event(jsonb_build_object(
        'id', 'evt_bench_' || p.id, 'type', 'payment_intent.succeeded', 'object', 'event',
        'data', jsonb_build_object('object', jsonb_build_object(
            'id', 'pi_bench_' || p.id, 'object', 'payment_intent',
            'metadata', jsonb_build_object('purchase_id', p.id::text)))))).meta AS meta
    FROM billing.purchases p WHERE p.status = 'pending'
) s WHERE meta = 'processed';
SQL
)
    [ "$ok" = "$NUSERS" ] || die "funding: $ok of $NUSERS events processed"
}

start_standin() {
    log "Stripe stand-in (dev/stripe-standin), every Checkout call stalls ${STALL}s"
    # any sk_test_ key: the bench's own is in a file, not in the environment
    env -u STRIPE_SECRET_KEY perl "$ROOT/dev/stripe-standin" --stripe-port 0 \
        --url-file "$WORK/stripe.url" --stall "$STALL" --quiet \
        >"$WORK/standin.log" 2>&1 &
    STANDIN_PID=$!
    for _ in $(seq 1 100); do
        [ -s "$WORK/stripe.url" ] && break
        sleep 0.05
    done
    [ -s "$WORK/stripe.url" ] || die "the Stripe stand-in did not start: $(cat "$WORK/standin.log")"
    STRIPE_URL=$(cat "$WORK/stripe.url")
}

# render_nginx WORKERS [extra main-context lines]
render_nginx() {
    local workers=$1 extra=${2:-} user=""
    NGINX_PREFIX="$WORK/nginx"
    mkdir -p "$NGINX_PREFIX/logs" "$NGINX_PREFIX/tmp"
    [ "$(id -u)" = 0 ] && user="user root;"
    cat >"$NGINX_PREFIX/nginx.conf" <<CONF
load_module $MODULE_COPY;
$user
worker_processes $workers;
pid $NGINX_PREFIX/logs/nginx.pid;
error_log $NGINX_PREFIX/logs/error.log warn;
$extra
events {
    worker_connections 4096;
}

http {
    default_type application/json;
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path $NGINX_PREFIX/tmp;

    billing_database_url $TEST_NGINX_DATABASE_URL;
    billing_pool min=2 max=$POOL_MAX queue=1024;
${BENCH_BATCH:+    billing_batch max=$BENCH_BATCH;}
${BENCH_NGINX_HTTP:-}
    billing_db_timeouts connect=5s query=10s;

    billing_jwt_key file:$WORK/jwt-public.pem;
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    billing_jwt_leeway 60s;

    billing_stripe_secret_key file:$WORK/stripe.key;
    billing_stripe_api_url $STRIPE_URL;
    billing_stripe_timeouts connect=5s total=15s;
    billing_checkout_urls success=http://127.0.0.1:$PORT/health cancel=http://127.0.0.1:$PORT/health;

    # no limit_req anywhere: the benchmark measures the module, not the limiter
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        location = /baseline { return 200 "ok"; }
        location = /health { billing health; }
        location = /readyz { billing readyz; }
        location = /metrics { billing metrics; }
        location = /api/balance { billing balance; }
        location /api/purchases { billing purchases; }
        location = /api/usage/reconcile { billing reconcile; }
    }
}
CONF
}

start_nginx() {
    PORT=$(free_port)
    render_nginx "$WORKERS" "${BENCH_NGINX_MAIN:-}"
    "$NGINX_BIN" -t -q -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf"
    "$NGINX_BIN" -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf"
    BASE="http://127.0.0.1:$PORT"
    wait_status /readyz 200 15 || die "nginx is not ready: $(tail -n 5 "$NGINX_PREFIX/logs/error.log")"
    log "nginx: $WORKERS workers, billing_pool max=$POOL_MAX, on $BASE"
}

stop_nginx() {
    local pid
    [ -n "$NGINX_PREFIX" ] && [ -f "$NGINX_PREFIX/logs/nginx.pid" ] || return 0
    pid=$(cat "$NGINX_PREFIX/logs/nginx.pid")
    kill -QUIT "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

wait_status() {
    local path=$1 want=$2 limit=$3 got
    for _ in $(seq 1 $((limit * 10))); do
        got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE$path" || true)
        [ "$got" = "$want" ] && return 0
        sleep 0.1
    done
    return 1
}

worker_pids() {
    local master
    master=$(cat "$NGINX_PREFIX/logs/nginx.pid")
    pgrep -P "$master" | sort -n
}

# "pid:KiB pid:KiB ..." and the maximum in KiB
worker_rss() {
    local pid kb out="" max=0
    for pid in $(worker_pids); do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        out+="$pid:${kb}KiB "
        ((kb > max)) && max=$kb
    done
    printf '%s|%s\n' "${out% }" "$max"
}

# ------------------------------------------------------------------ runs

declare -A RPS P50 P90 P99 REQS ERRS LOAD CLIENTS
TOTAL_NGINX_REQS=0

export BENCH_DIR BENCH_THREADS=$THREADS
export BENCH_TOKENS BENCH_SERVICE_TOKEN BENCH_RUN_ID

# run_wrk NAME SCRIPT PATH [CONNS THREADS DURATION [extra wrk args]]
run_wrk() {
    local name=$1 script=$2 path=$3 c=${4:-$CONNS} t=${5:-$THREADS} d=${6:-$DURATION}
    shift 6 2>/dev/null || shift $#
    BENCH_RUN_ID="r$RANDOM$RANDOM-$name"
    wrk -t "$t" -c "$c" -d "${d}s" --latency "$@" -s "$BENCH_DIR/$script" "$BASE$path" \
        >"$WORK/wrk-$name.out" 2>&1 || { cat "$WORK/wrk-$name.out" >&2; die "wrk $name failed"; }
    local line
    line=$(grep '^BENCH ' "$WORK/wrk-$name.out") || { cat "$WORK/wrk-$name.out" >&2; die "no result from wrk $name"; }
    RPS[$name]=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$line")
    P50[$name]=$(sed -n 's/.* p50_us=\([0-9]*\).*/\1/p' <<<"$line")
    P90[$name]=$(sed -n 's/.* p90_us=\([0-9]*\).*/\1/p' <<<"$line")
    P99[$name]=$(sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' <<<"$line")
    REQS[$name]=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")
    LOAD[$name]=$(load1)
    CLIENTS[$name]=$c
    ERRS[$name]=$(awk '{ n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^(non2xx|connect|read|write|timeout)=/) { split($i, kv, "="); n += kv[2] } print n }' <<<"$line")
    TOTAL_NGINX_REQS=$((TOTAL_NGINX_REQS + REQS[$name]))
    log "$(printf '%-22s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %s' "$name" "${RPS[$name]}" \
        "$(ms "${P50[$name]}")" "$(ms "${P99[$name]}")" "${ERRS[$name]}")"
}

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

# the 1-minute load average: other work on the machine shows here
load1() { cut -d' ' -f1 /proc/loadavg; }

usage_entries() {
    admin_sql -c "SELECT count(*) FROM billing.ledger_entries WHERE type = 'usage'"
}

# run_pgbench NAME SCRIPT CLIENTS MODE ROLE
#   SCRIPT: bench/SCRIPT.pgbench; MODE: prepared | extended (-M);
#   ROLE: rt (the runtime login, as the module: it may only call the API
#   functions) | owner (the schema owner, as the functions' bodies run: the
#   lean scripts write the tables themselves).
# A reconcile script must write one usage entry per transaction (pgbench
# sees a function's 402 or 409 as success): the shortfall counts as errors.
run_pgbench() {
    local name=$1 script=$2 clients=$3 mode=$4 role=$5 j=$THREADS url before=0 after
    ((j > clients)) && j=$clients
    case $role in
        rt) url=$TEST_NGINX_DATABASE_URL ;;
        owner) url=$BILLING_TEST_ADMIN_URL ;;
        *) die "run_pgbench: role $role" ;;
    esac
    [[ $script == reconcile* ]] && before=$(usage_entries)
    rm -rf "$WORK/pgb-$name" && mkdir -p "$WORK/pgb-$name"
    (cd "$WORK/pgb-$name" && pgbench -n -M "$mode" -c "$clients" -j "$j" -T "$DURATION" -l \
        -D uid0="$UID0" -D nusers="$NUSERS" -D run="$((RANDOM % 9000 + 1))" \
        -D model=gpt-4o-mini -D inp=1000 -D outp=500 \
        -f "$BENCH_DIR/$script.pgbench" "$url") \
        >"$WORK/pgbench-$name.out" 2>&1 || { cat "$WORK/pgbench-$name.out" >&2; die "pgbench $name failed"; }
    LOAD[$name]=$(load1)
    CLIENTS[$name]=$clients
    RPS[$name]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/pgbench-$name.out")
    ERRS[$name]=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/pgbench-$name.out")
    : "${ERRS[$name]:=0}"
    # per-transaction log: client tx_no latency_us script_no epoch epoch_us
    local pct
    pct=$(cat "$WORK/pgb-$name"/pgbench_log.* | awk '{ print $3 }' \
        | sort -n | awk '{ v[NR] = $1 } END { n = NR; if (n < 1) { print 0, 0, 0, 0; exit }
            i50 = int(n * 0.50); i90 = int(n * 0.90); i99 = int(n * 0.99);
            if (i50 < 1) i50 = 1; if (i90 < 1) i90 = 1; if (i99 < 1) i99 = 1;
            print n, v[i50], v[i90], v[i99] }')
    read -r REQS[$name] P50[$name] P90[$name] P99[$name] <<<"$pct"
    if [[ $script == reconcile* ]]; then
        after=$(usage_entries)
        ERRS[$name]=$((ERRS[$name] + REQS[$name] - (after - before)))
    fi
    log "$(printf '%-22s %9.0f tx/s   p50 %7.2f ms  p99 %7.2f ms  errors %s  (load %s)' "$name" "${RPS[$name]}" \
        "$(ms "${P50[$name]}")" "$(ms "${P99[$name]}")" "${ERRS[$name]}" "${LOAD[$name]}")"
}

# a trickle of API calls while the database is down (curl, ~20/s)
trickle() {
    local end=$((SECONDS + $1))
    while ((SECONDS < end)); do
        curl -s -o /dev/null --max-time 5 -H "Authorization: Bearer $USER_TOKEN" "$BASE/api/balance" || true
        sleep 0.05
    done
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { if awk -v x="$1" -v op="$2" -v y="$3" 'BEGIN { exit !((op == ">=") ? x >= y : x < y) }'; then echo PASS; else echo MISS; fi; }

machine_info() {
    CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    NPROC=$(nproc)
    MEM_TOTAL=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    KERNEL=$(uname -r)
    NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')
    WRK_VERSION=$({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print $2 }')
    GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    GIT_DIRTY=$(git -C "$ROOT" status --porcelain -- ngx_http_billing_module sql config 2>/dev/null | wc -l)
}

setup_all() {
    need_tools
    make_workdir
    start_database
    make_keys_and_tokens
    fund_users
    start_standin
    BENCH_TOKENS="$WORK/tokens.txt"
    BENCH_SERVICE_TOKEN=$(cat "$WORK/service.token")
    USER_TOKEN=$(awk 'NR == 1 { print $2 }' "$WORK/tokens.txt")
}

# ------------------------------------------------------------------ the benchmark

bench_all() {
    local started=$SECONDS
    machine_info
    setup_all
    start_nginx

    local rss_before rss_after rss_b_max rss_a_max
    rss_before=$(worker_rss)
    WORKERS_AT_START=$(worker_pids | tr '\n' ' ')
    log "worker RSS before load: ${rss_before%|*}"

    log "warm-up (3 s, not counted in the table)"
    run_wrk warmup mixed.lua /health "$CONNS" "$THREADS" 3

    run_wrk baseline plain.lua /baseline
    run_wrk health plain.lua /health
    run_wrk balance balance.lua /api/balance
    run_wrk reconcile reconcile.lua /api/usage/reconcile

    # The SQL alone, same database, right after the HTTP runs: the module's
    # own statements and the lean baselines, at the most the module can have
    # in flight (workers x pool max), each beside its lean twin. -M prepared
    # compares the SQL without parse and plan of the outer statement;
    # pg_reconcile_ext is the statement as the module sends it today (an
    # unnamed statement per request, as PQsendQueryParams does).
    local pool_clients=$((WORKERS * POOL_MAX))
    POOL_CLIENTS=$pool_clients
    [ "$(admin_sql -c "SELECT status FROM billing.api_balance('$((UID0 + 1))')")" = 200 ] \
        || die "api_balance does not answer 200 for a funded user"
    run_pgbench pg_balance balance "$pool_clients" prepared rt
    run_pgbench pg_balance_lean balance-lean "$pool_clients" prepared owner
    run_pgbench pg_reconcile reconcile "$pool_clients" prepared rt
    run_pgbench pg_reconcile_lean reconcile-lean "$pool_clients" prepared owner
    run_pgbench pg_reconcile_ext reconcile "$pool_clients" extended rt
    if [ "$pool_clients" != "$CONNS" ]; then
        run_pgbench pg_reconcile_conns reconcile "$CONNS" prepared rt
        run_pgbench pg_reconcile_lean_conns reconcile-lean "$CONNS" prepared owner
    fi

    log "soak: ${SOAK}s of 80% /health, 15% /api/balance, 5% reconcile"
    run_wrk soak mixed.lua /health "$CONNS" "$THREADS" "$SOAK"
    rss_after=$(worker_rss)
    local rss_reqs=$TOTAL_NGINX_REQS
    log "worker RSS after $rss_reqs requests: ${rss_after%|*}"
    rss_b_max=${rss_before#*|}
    rss_a_max=${rss_after#*|}

    phase_stripe_stall
    local stall_purchases=$STALL_PURCHASES

    # /health while the database is stopped (API calls trickle in and get 503)
    log "/health while PostgreSQL is stopped"
    "$PGSERVER" stop "$WORK/pg" >/dev/null
    local down_api
    down_api=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $USER_TOKEN" \
        "$BASE/api/balance" || true)
    trickle "$((DURATION + 2))" &
    BG_PIDS+=($!)
    sleep 1
    run_wrk health_db_down plain.lua /health
    wait "${BG_PIDS[-1]}" || true
    local t0=$SECONDS recover
    "$PGSERVER" restart "$WORK/pg" >/dev/null
    if wait_status /readyz 200 60; then recover="$((SECONDS - t0)) s"; else recover="not within 60 s"; fi
    log "database back: /readyz 200 after $recover"

    # consistency after the run
    local violations usage_entries
    violations=$(admin_sql -c "SELECT count(*) FROM billing.invariant_violations()")
    usage_entries=$(admin_sql -c "SELECT count(*) FROM billing.ledger_entries WHERE type = 'usage'")

    # ------------------------------------------------------------ report
    local h_ratio r_ratio r64_ratio
    h_ratio=$(ratio "${RPS[health]}" "${RPS[baseline]}")
    r_ratio=$(ratio "${RPS[reconcile]}" "${RPS[pgbench_pool]}")
    r64_ratio=$(ratio "${RPS[reconcile]}" "${RPS[pgbench_conns]:-${RPS[pgbench_pool]}}")
    local elapsed=$((SECONDS - started))

    {
        echo "# Benchmark results ($(date -u '+%Y-%m-%d %H:%M UTC'))"
        echo
        echo "Command: \`bench/run.sh\` (BENCH_DURATION=$DURATION BENCH_CONNECTIONS=$CONNS BENCH_THREADS=$THREADS"
        echo "BENCH_USERS=$NUSERS BENCH_WORKERS=$WORKERS BENCH_POOL_MAX=$POOL_MAX BENCH_SOAK=$SOAK BENCH_STALL=$STALL), ${elapsed} s wall."
        echo
        echo "Machine: $NPROC × $CPU_MODEL, $MEM_TOTAL RAM, Linux $KERNEL; nginx $NGINX_VERSION, PostgreSQL $PG_VERSION"
        echo "(fsync,full_page_writes,synchronous_commit = $PG_DURABILITY), wrk $WRK_VERSION; module at $GIT_REV, .so sha256 $MODULE_SHA"
        echo "($GIT_DIRTY uncommitted paths under ngx_http_billing_module/ sql/ config)."
        echo "Everything (wrk, nginx, PostgreSQL, pgbench) shares these $NPROC cores."
        echo
        echo "| run | clients | requests | req/s | p50 ms | p99 ms | errors |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        local n c
        for n in baseline health balance reconcile pgbench_pool pgbench_conns soak health_stripe_stall health_db_down; do
            [ -n "${RPS[$n]:-}" ] || continue
            case $n in
                pgbench_pool) c=$pool_clients ;;
                *) c=$CONNS ;;
            esac
            printf '| %s | %s | %s | %.0f | %s | %s | %s |\n' "$(label "$n")" "$c" "${REQS[$n]}" "${RPS[$n]}" \
                "$(ms "${P50[$n]}")" "$(ms "${P99[$n]}")" "${ERRS[$n]}"
        done
        echo
        echo "| target | measured | verdict |"
        echo "|---|---|---|"
        echo "| /health ≥ 0.8 × return 200 | $h_ratio × | $(verdict "$h_ratio" ">=" 0.8) |"
        echo "| reconcile ≥ 0.8 × pgbench ($pool_clients clients = $WORKERS workers × pool max $POOL_MAX) | $r_ratio × | $(verdict "$r_ratio" ">=" 0.8) |"
        echo "| (reconcile / pgbench at $CONNS clients, for information) | $r64_ratio × | |"
        echo "| reconcile p99 < 20 ms at $CONNS connections | $(ms "${P99[reconcile]}") ms | $(verdict "${P99[reconcile]}" "<" 20000) |"
        echo "| docs/spec.md §6 SLO: reconcile p99 < 500 ms at $CONNS connections | $(ms "${P99[reconcile]}") ms | $(verdict "${P99[reconcile]}" "<" 500000) |"
        echo "| docs/spec.md §6 SLO: error rate < 0.1 % (reconcile) | ${ERRS[reconcile]} of ${REQS[reconcile]} | $(verdict "${ERRS[reconcile]}" "<" "$(awk -v n="${REQS[reconcile]}" 'BEGIN { print n / 1000 }')") |"
        echo "| worker RSS < 32 MiB after $rss_reqs requests | max $((rss_b_max / 1024)) MiB before → $((rss_a_max / 1024)) MiB after | $(verdict "$rss_a_max" "<" 32768) |"
        echo "| /health p99 with Stripe stalled (vs undisturbed $(ms "${P99[health]}") ms) | $(ms "${P99[health_stripe_stall]}") ms | $(ratio "${P99[health_stripe_stall]}" "${P99[health]}") × |"
        echo "| /health p99 with the database stopped (vs undisturbed) | $(ms "${P99[health_db_down]}") ms | $(ratio "${P99[health_db_down]}" "${P99[health]}") × |"
        echo
        echo "Worker RSS (VmRSS) before load: ${rss_before%|*}"
        echo "Worker RSS after $rss_reqs requests (all wrk runs above, soak included): ${rss_after%|*}"
        echo
        echo "Stripe stall: $stall_purchases purchase requests completed by the background clients during the"
        echo "window (each held ${STALL} s by the stand-in). Database stop: /api/balance answered $down_api"
        echo "while it was down; /readyz was 200 again $recover after the restart."
        echo "After the run: $usage_entries usage ledger entries, $violations invariant violations;"
        echo "worker crashes in error.log: $(grep -c 'exited on signal' "$NGINX_PREFIX/logs/error.log" || true);"
        echo "workers at start: $WORKERS_AT_START, at the end: $(worker_pids | tr '\n' ' ')."
    } >"$WORK/report.md"

    mkdir -p "$BENCH_DIR/results"
    cp "$WORK/report.md" "$RESULTS"
    echo
    cat "$RESULTS"
    log "written to $RESULTS"
}

# /health while the Stripe stand-in stalls a purchase flood: 8 clients keep
# POST /api/purchases outstanding (each waits STALL s on the stand-in)
phase_stripe_stall() {
    local bg bg_line
    log "/health while Stripe stalls ${STALL}s per purchase (8 purchase clients in the background)"
    BENCH_RUN_ID=purchases wrk -t 1 -c 8 -d "$((DURATION + 4))s" --timeout 30s --latency \
        -s "$BENCH_DIR/purchase.lua" "$BASE/api/purchases" >"$WORK/wrk-purchases.out" 2>&1 &
    bg=$!
    BG_PIDS+=("$bg")
    sleep 2
    run_wrk health_stripe_stall plain.lua /health
    wait "$bg" || true
    bg_line=$(grep '^BENCH ' "$WORK/wrk-purchases.out" || echo "requests=0")
    STALL_PURCHASES=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$bg_line")
    log "background purchases: $bg_line"
}

# bench/run.sh stall: only the Stripe-stall scenario, BENCH_REPEAT times
bench_stall() {
    local i
    machine_info
    setup_all
    start_nginx
    WORKERS_AT_START=$(worker_pids | tr '\n' ' ')
    for i in $(seq 1 "${BENCH_REPEAT:-3}"); do
        log "round $i, workers: $(worker_pids | tr '\n' ' ')"
        phase_stripe_stall
    done
    log "workers at start: $WORKERS_AT_START, now: $(worker_pids | tr '\n' ' ')"
    grep -v 'Connection refused\|Is the server running' "$NGINX_PREFIX/logs/error.log" | tail -n 20 >&2 || true
}

label() {
    case $1 in
        baseline) printf '%s\n' 'GET /baseline (return 200)' ;;
        health) echo 'GET /health' ;;
        balance) echo 'GET /api/balance' ;;
        reconcile) echo 'POST /api/usage/reconcile' ;;
        pgbench_pool) echo 'pgbench api_reconcile (pool size)' ;;
        pgbench_conns) echo 'pgbench api_reconcile' ;;
        soak) echo "soak mix (${SOAK} s)" ;;
        health_stripe_stall) echo 'GET /health, Stripe stalled' ;;
        health_db_down) echo 'GET /health, database stopped' ;;
        *) echo "$1" ;;
    esac
}

# ------------------------------------------------------------------ profile

bench_profile() {
    local out="$BENCH_DIR/results"
    machine_info
    setup_all
    mkdir -p "$out"

    # 1. perf, system-wide cpu-clock samples (no hardware counters needed)
    #    during the normal reconcile run: who uses the 2 cores?
    start_nginx
    run_wrk warmup mixed.lua /health "$CONNS" "$THREADS" 3
    if perf record -a -g -e cpu-clock -F 999 -o "$WORK/perf.data" -- sleep 1 >/dev/null 2>&1; then
        local what script path perf_pid
        for what in reconcile balance; do
            case $what in
                reconcile) script=reconcile.lua path=/api/usage/reconcile ;;
                balance) script=balance.lua path=/api/balance ;;
            esac
            perf record -a -g -e cpu-clock -F 999 -o "$WORK/perf-$what.data" -- sleep "$DURATION" \
                >/dev/null 2>&1 &
            perf_pid=$!
            run_wrk "$what" "$script" "$path"
            wait "$perf_pid" || true
            perf report -i "$WORK/perf-$what.data" --stdio --no-children --sort comm -g none \
                2>/dev/null | grep -v '^$' | head -n 30 >"$out/perf-$what-comm.txt" || true
            perf report -i "$WORK/perf-$what.data" --stdio --no-children --comm nginx --sort dso,sym -g none \
                2>/dev/null | grep -v '^$' | head -n 70 >"$out/perf-$what-nginx.txt" || true
            perf report -i "$WORK/perf-$what.data" --stdio --no-children --comm postgres --sort dso,sym -g none \
                2>/dev/null | grep -v '^$' | head -n 50 >"$out/perf-$what-postgres.txt" || true
        done
        log "perf reports in $out/perf-*.txt"
    else
        log "perf record does not work here: skipped"
    fi
    stop_nginx

    # 2. callgrind on one nginx process (master_process off) for a short
    #    reconcile run and a short /health run
    command -v valgrind >/dev/null || die "valgrind is missing"
    PORT=$(free_port)
    render_nginx 1 "daemon off;
master_process off;"
    BASE="http://127.0.0.1:$PORT"
    local what
    for what in reconcile health; do
        valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$what" \
            "$NGINX_BIN" -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" \
            >"$WORK/valgrind-$what.log" 2>&1 &
        local vg=$!
        wait_status /readyz 200 60 || die "nginx under callgrind did not start: $(tail "$WORK/valgrind-$what.log")"
        if [ "$what" = reconcile ]; then
            run_wrk cg_reconcile reconcile.lua /api/usage/reconcile 8 1 10
        else
            run_wrk cg_health plain.lua /health 8 1 10
        fi
        kill -QUIT "$vg"
        wait "$vg" || true
        callgrind_annotate --inclusive=no "$WORK/callgrind.$what" 2>/dev/null | head -n 60 \
            >"$out/callgrind-$what-self.txt" || true
        callgrind_annotate --inclusive=yes "$WORK/callgrind.$what" 2>/dev/null | head -n 80 \
            >"$out/callgrind-$what-inclusive.txt" || true
    done
    NGINX_PREFIX=""
    log "callgrind reports in $out/callgrind-*.txt"
}

case "$MODE" in
    all) bench_all ;;
    profile) bench_profile ;;
    stall) bench_stall ;;
    *) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 2 ;;
esac
