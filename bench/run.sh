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
#   bench/run.sh sqlab      only the SQL: own and lean statements alternating
#                           for BENCH_REPEAT rounds, the ratio of each round
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
# BENCH_POOL_MAX (10 per worker), BENCH_BATCH_POOL_MAX (2 per worker, the
# group-commit nginx's pool: fewer connections, fuller batches), BENCH_SOAK (60 s), BENCH_STALL (8 s),
# BENCH_NGINX_MAIN (extra main-context lines, e.g. worker_rlimit_core),
# BENCH_NGINX_HTTP (extra http-context lines), BENCH_BATCH (32: the balance and
# reconcile scenarios run a second time on an nginx with "billing_batch max=N;" when
# the module accepts that directive (nginx -t); 0 = no such run),
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
BATCH_POOL_MAX=${BENCH_BATCH_POOL_MAX:-2}   # the group-commit nginx's pool (see docs/benchmarks.md)
NGINX_POOL_MAX=$POOL_MAX                    # the pool of the nginx being started
SOAK=${BENCH_SOAK:-60}
STALL=${BENCH_STALL:-8}
UID0=1000000              # user ids are UID0+1 .. UID0+NUSERS (numeric: see reconcile.pgbench)
CREDITS=100000000000      # micros per user ($100,000): far more than a run spends
RESULTS="$BENCH_DIR/results/latest.md"
CHART="$BENCH_DIR/results/latest.png"
BATCH=${BENCH_BATCH-32}     # N of the group-commit reconcile run; 0 = no such run
MODE=${1:-all}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

WORK=""
NGINX_PREFIX=""
BATCH_PREFIX=""
STANDIN_PID=""
BG_PIDS=()

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$? pid
    set +e
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    stop_nginx
    if [ -n "$BATCH_PREFIX" ]; then
        NGINX_PREFIX=$BATCH_PREFIX
        stop_nginx
    fi
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

# render_nginx WORKERS [extra main-context lines [extra http-context lines]]
# into $NGINX_PREFIX (default $WORK/nginx), listening on $PORT
render_nginx() {
    local workers=$1 extra=${2:-} http_extra=${3:-} user=""
    NGINX_PREFIX=${NGINX_PREFIX:-$WORK/nginx}
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
    billing_pool min=2 max=$NGINX_POOL_MAX queue=1024;
$http_extra
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

# start_nginx [extra http-context lines]: a new nginx in $NGINX_PREFIX
start_nginx() {
    PORT=$(free_port)
    render_nginx "$WORKERS" "${BENCH_NGINX_MAIN:-}" "${1:-}"
    "$NGINX_BIN" -t -q -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf"
    "$NGINX_BIN" -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf"
    BASE="http://127.0.0.1:$PORT"
    wait_status /readyz 200 15 || die "nginx is not ready: $(tail -n 5 "$NGINX_PREFIX/logs/error.log")"
    log "nginx: $WORKERS workers, billing_pool max=$NGINX_POOL_MAX${1:+, $(tr -s ' ' <<<"$1")}, on $BASE"
}

# Does this module accept "billing_batch max=N"? nginx -t on a configuration
# with the directive (group commit, issue 10; a module without it says
# 'unknown directive').
batch_supported() {
    local saved=$NGINX_PREFIX rc=0
    NGINX_PREFIX="$WORK/nginx-probe"
    render_nginx 1 "" "    billing_batch max=$BATCH;"
    "$NGINX_BIN" -t -q -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" >"$WORK/batch-probe.log" 2>&1 || rc=1
    NGINX_PREFIX=$saved
    return $rc
}

# "batches batched_requests" of the running nginx (its /metrics)
batch_counters() {
    curl -fsS "$BASE/metrics" | awk '$1 == "billing_db_batches_total" { b = $2 }
        $1 == "billing_db_batched_requests_total" { r = $2 } END { printf "%d %d\n", b, r }'
}

# batch_sizes NAME BATCHES0 REQS0 BATCHES1 REQS1: the run's mean batch and
# the share of its requests that went in one
batch_sizes() {
    local name=$1 b=$(($4 - $2)) r=$(($5 - $3))
    BATCH_MEAN[$name]=$(awk -v b="$b" -v r="$r" 'BEGIN { printf "%.1f", b ? r / b : 0 }')
    BATCH_SHARE[$name]=$(awk -v r="$r" -v n="${REQS[$name]}" 'BEGIN { printf "%.0f", n ? 100 * r / n : 0 }')
}

# The balance and reconcile scenarios again, on a second nginx (same workers, same pool)
# whose only difference is "billing_batch max=$BATCH"; the first nginx stays
# up, idle, so its workers keep their RSS history.
run_batched() {
    if [ "$BATCH" = 0 ]; then
        BATCH_STATUS="not run (BENCH_BATCH=0)"
        return 0
    fi
    if ! batch_supported; then
        BATCH_STATUS="not available: this module does not accept billing_batch ($(grep -m1 -o 'unknown directive "[^"]*"' "$WORK/batch-probe.log" || echo 'nginx -t failed'))"
        log "reconcile with group commit: $BATCH_STATUS"
        return 0
    fi
    local saved_prefix=$NGINX_PREFIX saved_port=$PORT saved_base=$BASE saved_total=$TOTAL_NGINX_REQS
    NGINX_PREFIX="$WORK/nginx-batch"
    BATCH_PREFIX=$NGINX_PREFIX
    NGINX_POOL_MAX=$BATCH_POOL_MAX
    start_nginx "    billing_batch max=$BATCH;"
    run_wrk warmup_batch mixed.lua /health "$CONNS" "$THREADS" 3
    local n before
    for n in balance_batch reconcile_batch; do
        before=$(batch_counters)
        case $n in
            balance_batch) run_wrk balance_batch balance.lua /api/balance ;;
            reconcile_batch) run_wrk reconcile_batch reconcile.lua /api/usage/reconcile ;;
        esac
        # shellcheck disable=SC2046,SC2086  # two numbers each
        batch_sizes "$n" $before $(batch_counters)
    done
    stop_nginx
    NGINX_POOL_MAX=$POOL_MAX
    BATCH_STATUS="billing_batch max=$BATCH, billing_pool max=$BATCH_POOL_MAX"
    BATCH_PREFIX=""
    NGINX_PREFIX=$saved_prefix PORT=$saved_port BASE=$saved_base TOTAL_NGINX_REQS=$saved_total
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

declare -A RPS P50 P90 P99 REQS ERRS LOAD CLIENTS NGX_TICKS PG_TICKS BATCH_MEAN BATCH_SHARE
CLK_TCK=$(getconf CLK_TCK)

# CPU time (clock ticks) of the nginx workers, and of the PostgreSQL cluster:
# the postmaster, its live children, and (cutime, cstime) the children it
# has reaped, such as the backends of a finished pgbench
nginx_ticks() {
    local pid t=0
    if [ -z "$NGINX_PREFIX" ] || [ ! -f "$NGINX_PREFIX/logs/nginx.pid" ]; then echo 0; return; fi
    for pid in $(worker_pids); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
pg_ticks() {
    local pm pid t
    pm=$(head -n 1 "$WORK/pg/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    t=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat" 2>/dev/null || echo 0)
    for pid in $(pgrep -P "$pm"); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
cpu_mark() {
    MARK_NGX=$(nginx_ticks)
    MARK_PG=$(pg_ticks)
}
cpu_since_mark() {
    NGX_TICKS[$1]=$(($(nginx_ticks) - MARK_NGX))
    PG_TICKS[$1]=$(($(pg_ticks) - MARK_PG))
}
# CPU microseconds per request: us_per_req TICKS REQUESTS
us_per_req() {
    [ -n "$1" ] || { echo "–"; return; }
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "–" }'
}
TOTAL_NGINX_REQS=0

export BENCH_DIR BENCH_THREADS=$THREADS
export BENCH_TOKENS BENCH_SERVICE_TOKEN BENCH_RUN_ID

# run_wrk NAME SCRIPT PATH [CONNS THREADS DURATION [extra wrk args]]
run_wrk() {
    local name=$1 script=$2 path=$3 c=${4:-$CONNS} t=${5:-$THREADS} d=${6:-$DURATION}
    shift 6 2>/dev/null || shift $#
    BENCH_RUN_ID="r$RANDOM$RANDOM-$name"
    checkpoint
    cpu_mark
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
    cpu_since_mark "$name"
    CLIENTS[$name]=$c
    ERRS[$name]=$(awk '{ n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^(non2xx|connect|read|write|timeout)=/) { split($i, kv, "="); n += kv[2] } print n }' <<<"$line")
    TOTAL_NGINX_REQS=$((TOTAL_NGINX_REQS + REQS[$name]))
    log "$(printf '%-22s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %s' "$name" "${RPS[$name]}" \
        "$(ms "${P50[$name]}")" "$(ms "${P99[$name]}")" "${ERRS[$name]}")"
}

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

# Every measurement starts right after a CHECKPOINT: the same full-page-write
# state for all (the first change of a page after a checkpoint writes the
# whole page to the WAL), and no checkpoint of the previous run's WAL in the
# middle of this one (checkpoint_timeout is 5 min, a run 12 s). Quietly
# nothing while the database is stopped.
checkpoint() {
    admin_sql -c CHECKPOINT >/dev/null 2>&1 || true
}

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
    checkpoint
    cpu_mark
    (cd "$WORK/pgb-$name" && pgbench -n -M "$mode" -c "$clients" -j "$j" -T "$DURATION" -l \
        -D uid0="$UID0" -D nusers="$NUSERS" -D run="$((RANDOM % 9000 + 1))" \
        -D model=gpt-4o-mini -D inp=1000 -D outp=500 \
        -f "$BENCH_DIR/$script.pgbench" "$url") \
        >"$WORK/pgbench-$name.out" 2>&1 || { cat "$WORK/pgbench-$name.out" >&2; die "pgbench $name failed"; }
    LOAD[$name]=$(load1)
    cpu_since_mark "$name"
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
    local nreq p50 p90 p99
    read -r nreq p50 p90 p99 <<<"$pct"
    REQS[$name]=$nreq P50[$name]=$p50 P90[$name]=$p90 P99[$name]=$p99
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
# verdict VALUE OP LIMIT (OP: >=, <=, <) -> PASS | MISS
verdict() {
    if awk -v x="$1" -v op="$2" -v y="$3" 'BEGIN { exit !(op == ">=" ? x >= y : op == "<=" ? x <= y : x < y) }'
    then echo PASS; else echo MISS; fi
}

machine_info() {
    CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    NPROC=$(nproc)
    MEM_TOTAL=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    KERNEL=$(uname -r)
    NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')
    WRK_VERSION=$(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo unknown)
    GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    GIT_DIRTY=$(git -C "$ROOT" status --porcelain -- ngx_http_billing_module sql config bench ':!bench/results' 2>/dev/null | wc -l)
    PGBENCH_VERSION=$(pgbench --version | awk '{ print $3 }')
    LOAD_START=$(load1)
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

    local rss_before rss_after
    rss_before=$(worker_rss)
    WORKERS_AT_START=$(worker_pids | tr '\n' ' ')
    log "worker RSS before load: ${rss_before%|*}"

    log "warm-up (3 s, not counted in the table)"
    run_wrk warmup mixed.lua /health "$CONNS" "$THREADS" 3

    run_wrk baseline plain.lua /baseline
    run_wrk health plain.lua /health
    run_wrk balance balance.lua /api/balance
    run_wrk reconcile reconcile.lua /api/usage/reconcile
    run_batched

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
    run_pgbench pg_balance_ext balance "$pool_clients" extended rt
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
    ELAPSED=$((SECONDS - started))
    RSS_BEFORE=$rss_before RSS_AFTER=$rss_after RSS_REQS=$rss_reqs
    STALL_PURCHASES_N=$stall_purchases DOWN_API=$down_api RECOVER=$recover
    VIOLATIONS=$violations USAGE_ENTRIES=$usage_entries
    mkdir -p "$BENCH_DIR/results"
    write_report >"$WORK/report.md"
    cp "$WORK/report.md" "$RESULTS"
    draw_chart
    echo
    cat "$RESULTS"
    log "written to $RESULTS${CHART_DONE:+ and $CHART}"
}

# the scenarios of the report, in its order
SCENARIOS=(baseline health balance balance_batch pg_balance pg_balance_lean pg_balance_ext
           reconcile reconcile_batch pg_reconcile pg_reconcile_lean pg_reconcile_ext
           pg_reconcile_conns pg_reconcile_lean_conns
           soak health_stripe_stall health_db_down)

# one target line: | what | measured | target | PASS/MISS |
# target_row TEXT MEASURED OP LIMIT [UNIT]   (OP: >= or <)
target_row() {
    local v
    if [ -z "$2" ] || [ "$2" = n/a ]; then v="n/a"; else v=$(verdict "$2" "$3" "$4"); fi
    local op=$3
    case $op in ">=") op="≥" ;; "<=") op="≤" ;; esac
    printf '| %s | %s%s | %s %s%s | %s |\n' "$1" "$2" "${5:-}" "$op" "$4" "${5:-}" "$v"
}

write_report() {
    local n pool=$POOL_CLIENTS b_max=${RSS_BEFORE#*|} a_max=${RSS_AFTER#*|}
    local r_lean rb_lean own_lean ext_lean bal_lean bb_lean h_ratio r_own p99_r p99_rb
    r_lean=$(ratio "${RPS[reconcile]}" "${RPS[pg_reconcile_lean]}")
    rb_lean=$(ratio "${RPS[reconcile_batch]:-0}" "${RPS[pg_reconcile_lean]}")
    own_lean=$(ratio "${RPS[pg_reconcile]}" "${RPS[pg_reconcile_lean]}")
    ext_lean=$(ratio "${RPS[pg_reconcile_ext]}" "${RPS[pg_reconcile_lean]}")
    bal_lean=$(ratio "${RPS[balance]}" "${RPS[pg_balance_lean]}")
    bb_lean=$(ratio "${RPS[balance_batch]:-0}" "${RPS[pg_balance_lean]}")
    h_ratio=$(ratio "${RPS[health]}" "${RPS[baseline]}")
    r_own=$(ratio "${RPS[reconcile]}" "${RPS[pg_reconcile]}")
    p99_r=$(ms "${P99[reconcile]}")
    [ -n "${RPS[reconcile_batch]:-}" ] && p99_rb=$(ms "${P99[reconcile_batch]}") || p99_rb=""

    echo "# Benchmark results ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Command: \`bench/run.sh\` (BENCH_DURATION=$DURATION BENCH_CONNECTIONS=$CONNS BENCH_THREADS=$THREADS"
    echo "BENCH_USERS=$NUSERS BENCH_WORKERS=$WORKERS BENCH_POOL_MAX=$POOL_MAX BENCH_BATCH_POOL_MAX=$BATCH_POOL_MAX BENCH_SOAK=$SOAK BENCH_STALL=$STALL"
    echo "BENCH_BATCH=$BATCH), ${ELAPSED} s wall."
    echo
    echo "Machine: $NPROC × $CPU_MODEL, $MEM_TOTAL RAM, Linux $KERNEL; nginx $NGINX_VERSION, PostgreSQL $PG_VERSION"
    echo "(fsync,full_page_writes,synchronous_commit = $PG_DURABILITY), pgbench $PGBENCH_VERSION, wrk $WRK_VERSION;"
    echo "commit $GIT_REV ($GIT_DIRTY uncommitted paths under ngx_http_billing_module/ sql/ config bench/), .so sha256 $MODULE_SHA."
    echo "Everything (wrk, nginx, PostgreSQL, pgbench) shares these $NPROC cores. Load average (1 min)"
    echo "at the start: $LOAD_START; after each run in the table. It counts the run's own processes too"
    echo "(up to 64 pgbench backends), so compare a row with the same row of another run: other work on"
    echo "the machine shows as a higher figure there. Each run starts after a CHECKPOINT."
    echo
    echo "| scenario | tool | clients | requests | req/s or tx/s | p50 ms | p90 ms | p99 ms | errors | load | nginx CPU µs/req | PostgreSQL CPU µs/req |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for n in "${SCENARIOS[@]}"; do
        [ -n "${RPS[$n]:-}" ] || continue
        printf '| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$n")" "$(tool "$n")" \
            "${CLIENTS[$n]}" "${REQS[$n]}" "${RPS[$n]}" "$(ms "${P50[$n]}")" "$(ms "${P90[$n]}")" \
            "$(ms "${P99[$n]}")" "${ERRS[$n]}" "${LOAD[$n]}" \
            "$(us_per_req "${NGX_TICKS[$n]}" "${REQS[$n]}")" "$(us_per_req "${PG_TICKS[$n]}" "${REQS[$n]}")"
    done
    echo
    echo "CPU µs/req: CPU time the nginx workers and the PostgreSQL processes (postmaster, backends,"
    echo "background writers) used during the run (/proc/PID/stat, ${CLK_TCK} Hz ticks), divided by its"
    echo "requests or transactions: what one request costs each, whatever else shared the cores."
    echo
    echo "Group commit: $BATCH_STATUS."
    if [ -n "${BATCH_MEAN[reconcile_batch]:-}" ]; then
        echo "Mean batch (billing_db_batched_requests_total / billing_db_batches_total over the run):"
        echo "balance ${BATCH_MEAN[balance_batch]} requests, ${BATCH_SHARE[balance_batch]} % of its requests in a batch;"
        echo "reconcile ${BATCH_MEAN[reconcile_batch]} requests, ${BATCH_SHARE[reconcile_batch]} % in a batch."
    fi
    echo
    echo "| target (issue 10) | measured | target | verdict |"
    echo "|---|---|---|---|"
    if [ -n "${RPS[reconcile_batch]:-}" ]; then
        target_row "HTTP reconcile, $BATCH_STATUS / pgbench lean reconcile at $pool clients" "$rb_lean" ">=" 1.5 " ×"
    else
        echo "| HTTP reconcile with group commit / pgbench lean reconcile at $pool clients | $BATCH_STATUS | ≥ 1.5 × | n/a |"
    fi
    target_row "HTTP reconcile without batching / pgbench lean reconcile at $pool clients" "$r_lean" ">=" 1.5 " ×"
    target_row "pgbench own reconcile / lean (-M prepared, $pool clients)" "$own_lean" ">=" 0.9 " ×"
    if [ -n "${RPS[balance_batch]:-}" ]; then
        target_row "GET /api/balance, $BATCH_STATUS / pgbench lean read at $pool clients" "$bb_lean" ">=" 0.9 " ×"
    fi
    target_row "GET /api/balance without batching / pgbench lean read at $pool clients" "$bal_lean" ">=" 0.9 " ×"
    target_row "GET /health / return 200" "$h_ratio" ">=" 0.9 " ×"
    target_row "worker RSS after $RSS_REQS requests (max $((b_max / 1024)) MiB before)" "$((a_max / 1024))" "<" 32 " MiB"
    [ -n "$p99_rb" ] && target_row "reconcile p99 at $CONNS connections, $BATCH_STATUS" "$p99_rb" "<=" 50 " ms"
    target_row "reconcile p99 at $CONNS connections, without batching" "$p99_r" "<=" 50 " ms"
    target_row "reconcile errors (HTTP runs)" "$((ERRS[reconcile] + ${ERRS[reconcile_batch]:-0}))" "<" 1
    target_row "invariant violations after the run (billing.invariant_violations())" "$VIOLATIONS" "<" 1
    echo
    echo "For information: pgbench own reconcile -M extended (an unnamed statement per call, as the"
    echo "module sends it) / lean: $ext_lean ×; HTTP reconcile / pgbench own reconcile at $pool clients: $r_own ×;"
    echo "pgbench own balance / lean read: $(ratio "${RPS[pg_balance]}" "${RPS[pg_balance_lean]}") × (-M prepared),"
    echo "$(ratio "${RPS[pg_balance_ext]}" "${RPS[pg_balance_lean]}") × (-M extended); GET /api/balance / pgbench own balance -M extended:"
    echo "$(ratio "${RPS[balance]}" "${RPS[pg_balance_ext]}") ×."
    echo "PostgreSQL CPU per transaction (less disturbed by other work than a rate): own reconcile"
    echo "$(us_per_req "${PG_TICKS[pg_reconcile]}" "${REQS[pg_reconcile]}") µs, lean $(us_per_req "${PG_TICKS[pg_reconcile_lean]}" "${REQS[pg_reconcile_lean]}") µs;"
    echo "own balance $(us_per_req "${PG_TICKS[pg_balance]}" "${REQS[pg_balance]}") µs, lean read $(us_per_req "${PG_TICKS[pg_balance_lean]}" "${REQS[pg_balance_lean]}") µs."
    echo "/health p99 with Stripe stalled: $(ms "${P99[health_stripe_stall]}") ms, with the database stopped:"
    echo "$(ms "${P99[health_db_down]}") ms (undisturbed $(ms "${P99[health]}") ms)."
    echo
    echo "Worker RSS (VmRSS) before load: ${RSS_BEFORE%|*}"
    echo "Worker RSS after $RSS_REQS requests (all wrk runs on this nginx, soak included): ${RSS_AFTER%|*}"
    echo
    echo "Stripe stall: $STALL_PURCHASES_N purchase requests completed by the background clients during the"
    echo "window (each held ${STALL} s by the stand-in). Database stop: /api/balance answered $DOWN_API"
    echo "while it was down; /readyz was 200 again $RECOVER after the restart."
    echo "After the run: $USAGE_ENTRIES usage ledger entries, $VIOLATIONS invariant violations;"
    echo "worker crashes in error.log: $(grep -c 'exited on signal' "$NGINX_PREFIX/logs/error.log" || true);"
    echo "workers at start: $WORKERS_AT_START, at the end: $(worker_pids | tr '\n' ' ')."
}

# bench/results/latest.png: throughput (log scale) and p50/p90/p99 per
# scenario, gnuplot (pngcairo)
draw_chart() {
    local n dat="$WORK/chart.dat"
    CHART_DONE=""
    : >"$dat"
    for n in "${SCENARIOS[@]}"; do
        [ -n "${RPS[$n]:-}" ] || continue
        printf '"%s" %s %s %s %s\n' "$(short_label "$n")" "${RPS[$n]}" \
            "$(ms "${P50[$n]}")" "$(ms "${P90[$n]}")" "$(ms "${P99[$n]}")" >>"$dat"
    done
    gnuplot >"$WORK/gnuplot.log" 2>&1 <<GP || { log "gnuplot failed: $(tail -n 3 "$WORK/gnuplot.log")"; return 0; }
set terminal pngcairo noenhanced size 1400,900 font "DejaVu Sans,10"
set output "$CHART"
set multiplot layout 2,1 title "ScholarLink Billing, bench/run.sh at $GIT_REV ($(date -u '+%Y-%m-%d %H:%M UTC'); $NPROC cores, synchronous_commit=on; $CONNS wrk connections, pgbench at the clients shown in latest.md)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics mytics
set logscale y
set xtics rotate by -30 scale 0 font ",9"
set key top right
set lmargin 12
set bmargin 7
set ylabel "req/s (wrk) or tx/s (pgbench)"
set title "Throughput"
plot "$dat" using 2:xtic(1) title "req/s or tx/s" linecolor rgb "#3b6ea8", \
     "" using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,0.7 font ",8" notitle
set ylabel "ms"
set title "Latency percentiles"
plot "$dat" using 3:xtic(1) title "p50" linecolor rgb "#8fbf6a", \
     "" using 4 title "p90" linecolor rgb "#e0a030", \
     "" using 5 title "p99" linecolor rgb "#c0392b"
unset multiplot
GP
    CHART_DONE=1
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
        baseline) echo 'GET /baseline (return 200)' ;;
        health) echo 'GET /health' ;;
        balance) echo 'GET /api/balance' ;;
        balance_batch) echo "GET /api/balance, billing_batch max=$BATCH, pool max=$BATCH_POOL_MAX" ;;
        pg_balance) echo 'own balance: api_balance()' ;;
        pg_balance_lean) echo 'lean balance read' ;;
        pg_balance_ext) echo 'own balance, -M extended' ;;
        reconcile) echo 'POST /api/usage/reconcile' ;;
        reconcile_batch) echo "POST /api/usage/reconcile, billing_batch max=$BATCH, pool max=$BATCH_POOL_MAX" ;;
        pg_reconcile) echo 'own reconcile: api_reconcile()' ;;
        pg_reconcile_lean) echo 'lean reconcile transaction' ;;
        pg_reconcile_ext) echo 'own reconcile, -M extended' ;;
        pg_reconcile_conns) echo "own reconcile at $CONNS clients" ;;
        pg_reconcile_lean_conns) echo "lean reconcile at $CONNS clients" ;;
        soak) echo "soak mix (${SOAK} s: 80 % /health, 15 % balance, 5 % reconcile)" ;;
        health_stripe_stall) echo 'GET /health, Stripe stalled' ;;
        health_db_down) echo 'GET /health, database stopped' ;;
        *) echo "$1" ;;
    esac
}

# the chart's x labels
short_label() {
    case $1 in
        baseline) echo 'return 200' ;;
        health) echo '/health' ;;
        balance) echo '/api/balance' ;;
        balance_batch) echo "/api/balance batch=$BATCH" ;;
        pg_balance) echo 'pg own balance' ;;
        pg_balance_lean) echo 'pg lean balance' ;;
        pg_balance_ext) echo 'pg own bal. extended' ;;
        reconcile) echo 'reconcile' ;;
        reconcile_batch) echo "reconcile batch=$BATCH" ;;
        pg_reconcile) echo 'pg own reconcile' ;;
        pg_reconcile_lean) echo 'pg lean reconcile' ;;
        pg_reconcile_ext) echo 'pg own rec. extended' ;;
        pg_reconcile_conns) echo "pg own rec. ${CONNS}c" ;;
        pg_reconcile_lean_conns) echo "pg lean rec. ${CONNS}c" ;;
        soak) echo 'soak mix' ;;
        health_stripe_stall) echo '/health Stripe stall' ;;
        health_db_down) echo '/health DB down' ;;
        *) echo "$1" ;;
    esac
}

tool() {
    case $1 in
        pg_*_ext) echo 'pgbench -M extended' ;;
        pg_*) echo 'pgbench -M prepared' ;;
        *) echo wrk ;;
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

# ------------------------------------------------------------------ sqlprofile

# bench/run.sh sqlprofile: where the stored functions spend their time, beside
# the lean baselines: pg_stat_statements (track = all: the statements inside
# the functions too), track_functions = all, auto_explain of the nested
# statements of a few calls, perf on one backend.
bench_sqlprofile() {
    local out="$BENCH_DIR/results/sqlprofile.md" script role url clients=$((WORKERS * POOL_MAX)) pid
    machine_info
    need_tools
    make_workdir
    start_database
    fund_users
    admin_sql -c "ALTER SYSTEM SET shared_preload_libraries = pg_stat_statements, auto_explain" \
              -c "ALTER SYSTEM SET track_functions = 'all'" >/dev/null
    "$PGSERVER" stop "$WORK/pg" >/dev/null
    "$PGSERVER" restart "$WORK/pg" >/dev/null
    # the libraries' own settings exist once they are loaded
    admin_sql -c "ALTER SYSTEM SET pg_stat_statements.track = 'all'" -c "SELECT pg_reload_conf()" \
              -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    mkdir -p "$BENCH_DIR/results"
    {
        echo "# SQL profile ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $GIT_REV)"
        echo
        echo "\`bench/run.sh sqlprofile\`: each script alone for ${DURATION} s at $clients clients (pgbench -M prepared),"
        echo "pg_stat_statements with track = all (the statements inside functions are counted too),"
        echo "track_functions = all. $NPROC × $CPU_MODEL; PostgreSQL $PG_VERSION, synchronous_commit on."
    } >"$WORK/sqlprofile.md"
    for script in reconcile reconcile-lean balance balance-lean; do
        case $script in *-lean) role=owner url=$BILLING_TEST_ADMIN_URL ;; *) role=rt url=$TEST_NGINX_DATABASE_URL ;; esac
        log "sqlprofile: $script ($role), ${DURATION} s at $clients clients"
        admin_sql -c "SELECT pg_stat_statements_reset()" -c "SELECT pg_stat_reset()" >/dev/null
        pgbench -n -M prepared -c "$clients" -j "$THREADS" -T "$DURATION" \
            -D uid0="$UID0" -D nusers="$NUSERS" -D run="$((RANDOM % 9000 + 1))" \
            -D model=gpt-4o-mini -D inp=1000 -D outp=500 \
            -f "$BENCH_DIR/$script.pgbench" "$url" >"$WORK/sqlprofile-$script.out" 2>&1 \
            || { cat "$WORK/sqlprofile-$script.out" >&2; die "pgbench $script failed"; }
        sleep 0.6   # track_functions counts reach the statistics collector after PGSTAT_MIN_INTERVAL
        {
            echo
            echo "## $script ($(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/sqlprofile-$script.out") tx/s)"
            echo
            echo "Statements by total time (pg_stat_statements, nested included; times overlap):"
            echo
            echo "| calls | mean µs | total ms | rows | statement |"
            echo "|---:|---:|---:|---:|---|"
            admin_sql -F $'\t' -c "SELECT calls, round((mean_exec_time * 1000)::numeric, 1), round(total_exec_time::numeric),
                                        rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
                                 FROM pg_stat_statements WHERE calls > 10
                                 ORDER BY total_exec_time DESC LIMIT 12" \
                | sed 's/|/\\|/g; s/\t/ | /g; s/^/| /; s/$/ |/'
            echo
            echo "Functions (track_functions = all; self = without the functions it calls):"
            echo
            echo "| function | calls | total µs per call | self µs per call |"
            echo "|---|---:|---:|---:|"
            admin_sql -F '|' -c "SELECT schemaname || '.' || funcname, calls,
                                        round((total_time * 1000 / calls)::numeric, 1),
                                        round((self_time * 1000 / calls)::numeric, 1)
                                 FROM pg_stat_user_functions WHERE calls > 0
                                 ORDER BY total_time DESC LIMIT 12" \
                | sed 's/|/ | /g; s/^/| /; s/$/ |/'
        } >>"$WORK/sqlprofile.md"
    done

    # auto_explain of every nested statement of three reconciles (1 client)
    log "sqlprofile: auto_explain of three api_reconcile calls"
    admin_sql -c "ALTER SYSTEM SET auto_explain.log_min_duration = 0" \
              -c "ALTER SYSTEM SET auto_explain.log_nested_statements = on" \
              -c "ALTER SYSTEM SET auto_explain.log_analyze = on" \
              -c "ALTER SYSTEM SET auto_explain.log_timing = off" \
              -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.3
    local logf="$WORK/pg/postgres.log" lines
    lines=$(wc -l <"$logf")
    pgbench -n -M prepared -c 1 -t 3 -D uid0="$UID0" -D nusers="$NUSERS" -D run=9001 \
        -D model=gpt-4o-mini -D inp=1000 -D outp=500 \
        -f "$BENCH_DIR/reconcile.pgbench" "$TEST_NGINX_DATABASE_URL" >/dev/null 2>&1 || true
    admin_sql -c "ALTER SYSTEM RESET auto_explain.log_min_duration" -c "SELECT pg_reload_conf()" >/dev/null
    {
        echo
        echo "## auto_explain: the nested statements of the third api_reconcile call"
        echo
        echo '```'
        tail -n +"$((lines + 1))" "$logf" | grep -v 'statement: \|^\s*$' | tail -n 120 || true
        echo '```'
    } >>"$WORK/sqlprofile.md"

    # perf on the backend of one pgbench client
    if perf record -e cpu-clock -o "$WORK/perf-probe.data" -- true >/dev/null 2>&1; then
        log "sqlprofile: perf on one backend (api_reconcile, 1 client, ${DURATION} s)"
        pgbench -n -M prepared -c 1 -T "$DURATION" -D uid0="$UID0" -D nusers="$NUSERS" -D run=9002 \
            -D model=gpt-4o-mini -D inp=1000 -D outp=500 \
            -f "$BENCH_DIR/reconcile.pgbench" "$TEST_NGINX_DATABASE_URL" >/dev/null 2>&1 &
        local pgb=$!
        sleep 1
        pid=$(admin_sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' LIMIT 1")
        if [ -n "$pid" ]; then
            perf record -g -e cpu-clock -F 1999 -p "$pid" -o "$WORK/perf-backend.data" -- sleep $((DURATION - 2)) \
                >/dev/null 2>&1 || true
            {
                echo
                echo "## perf: one backend running api_reconcile (cpu-clock, self time)"
                echo
                echo '```'
                perf report -i "$WORK/perf-backend.data" --stdio --no-children --sort dso,sym -g none 2>/dev/null \
                    | grep -v '^$\|^#' | head -n 40 || true
                echo '```'
            } >>"$WORK/sqlprofile.md"
        fi
        wait "$pgb" || true
    else
        echo "(perf does not work here: no backend profile)" >>"$WORK/sqlprofile.md"
    fi
    cp "$WORK/sqlprofile.md" "$out"
    log "written to $out"
}

# bench/run.sh sqlab: only the SQL, own beside lean, BENCH_REPEAT rounds
# alternating (own reconcile, lean reconcile, own balance, lean balance),
# DURATION s each at workers x pool max clients: the ratio with the noise
# of a shared machine visible as its spread over the rounds
bench_sqlab() {
    local i clients=$((WORKERS * POOL_MAX))
    machine_info
    need_tools
    make_workdir
    start_database
    fund_users
    POOL_CLIENTS=$clients
    for i in $(seq 1 "${BENCH_REPEAT:-3}"); do
        run_pgbench "own_reconcile_$i" reconcile "$clients" prepared rt
        run_pgbench "lean_reconcile_$i" reconcile-lean "$clients" prepared owner
        run_pgbench "own_balance_$i" balance "$clients" prepared rt
        run_pgbench "lean_balance_$i" balance-lean "$clients" prepared owner
        log "round $i: reconcile own/lean $(ratio "${RPS[own_reconcile_$i]}" "${RPS[lean_reconcile_$i]}") ×" \
            "(PostgreSQL CPU $(us_per_req "${PG_TICKS[own_reconcile_$i]}" "${REQS[own_reconcile_$i]}")" \
            "vs $(us_per_req "${PG_TICKS[lean_reconcile_$i]}" "${REQS[lean_reconcile_$i]}") µs/tx)," \
            "balance own/lean $(ratio "${RPS[own_balance_$i]}" "${RPS[lean_balance_$i]}") ×" \
            "($(us_per_req "${PG_TICKS[own_balance_$i]}" "${REQS[own_balance_$i]}")" \
            "vs $(us_per_req "${PG_TICKS[lean_balance_$i]}" "${REQS[lean_balance_$i]}") µs/tx)"
    done
}

# one compound command ending in exit: bash has read all of it before it
# runs, so editing this file during a run cannot change the running one
case "$MODE" in
    all) bench_all ;;
    profile) bench_profile ;;
    sqlprofile) bench_sqlprofile ;;
    sqlab) bench_sqlab ;;
    stall) bench_stall ;;
    *) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 2 ;;
esac; exit
