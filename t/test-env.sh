# shellcheck shell=bash
# Sourced by ./build.sh test: one PostgreSQL for the whole run, keys for
# tokens, then every suite.  Functions only; build.sh calls test_main.

test_free_port() {
    perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr => "127.0.0.1", Listen => 1)->sockport'
}

test_setup() {
    TEST_TMP=$(mktemp -d /tmp/billing-test.XXXXXX)
    chmod 755 "$TEST_TMP"
    export TEST_TMP

    # removed at the end even when a suite fails
    trap test_teardown EXIT

    log "starting PostgreSQL for the test run"
    "$ROOT/t/pgserver.sh" start "$TEST_TMP/pg" >/dev/null
    # shellcheck disable=SC1091
    . "$TEST_TMP/pg/env"

    log "applying migrations"
    # the runtime login (TEST_NGINX_DATABASE_URL's) may SET ROLE billing_app
    DATABASE_URL="$TEST_NGINX_DATABASE_URL" \
        "$ROOT/sql/migrate.sh" --grant-runtime "$BILLING_TEST_ADMIN_URL" >/dev/null

    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
        -out "$TEST_TMP/jwt-private.pem" 2>/dev/null
    openssl pkey -in "$TEST_TMP/jwt-private.pem" -pubout \
        -out "$TEST_TMP/jwt-public.pem"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
        -out "$TEST_TMP/other-private.pem" 2>/dev/null

    export BILLING_TEST_JWT_PRIVATE_KEY_FILE="$TEST_TMP/jwt-private.pem"
    export BILLING_TEST_OTHER_PRIVATE_KEY_FILE="$TEST_TMP/other-private.pem"
    export TEST_NGINX_JWT_PUBLIC_KEY_FILE="$TEST_TMP/jwt-public.pem"
    # the module, loaded once for every block by Test::Nginx (upstream and
    # the fallback alike) and by BillingTest::start_nginx: no .t file names it
    export TEST_NGINX_LOAD_MODULES="${TEST_NGINX_LOAD_MODULES:-$BUILD_DIR/$MODULE_NAME.so}"
    export TEST_NGINX_BINARY="$NGINX_BIN"
    export TEST_NGINX_SERVER_PORT="${TEST_NGINX_SERVER_PORT:-$(test_free_port)}"
    export BILLING_ROOT="$ROOT"
}

test_teardown() {
    if [ -n "${TEST_TMP:-}" ] && [ -d "$TEST_TMP" ]; then
        "$ROOT/t/pgserver.sh" stop "$TEST_TMP/pg" >/dev/null 2>&1 || true
        rm -rf "$TEST_TMP"
    fi
}

# nginx with the sanitizer runtimes preloaded: Debian's nginx is not built
# with them, the -asan module is. Only nginx gets them, not perl or psql.
test_asan_wrapper() {
    local wrapper="$TEST_TMP/nginx-asan"
    mkdir -p "$TEST_TMP/asan"
    # workers of a config without a "user" directive run as nobody when the
    # suite runs as root (t/090 renders ./build.sh run's own config)
    chmod 1777 "$TEST_TMP/asan"
    cat > "$wrapper" <<WRAPPER
#!/bin/sh
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:log_path=$TEST_TMP/asan/asan"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$TEST_TMP/asan/ubsan"
exec $NGINX_BIN "\$@"
WRAPPER
    chmod +x "$wrapper"
    echo "$wrapper"
}

# the whole suite again against the -asan module; any report fails it.
# With group commit on (BILLING_TEST_BATCH, t/lib/BillingTest.pm): the first
# pass runs it off (the default), so both modes run without a third pass.
test_asan_suite() {
    local wrapper
    wrapper=$(test_asan_wrapper)
    BILLING_TEST_BATCH="${BILLING_TEST_BATCH:-8}" \
    TEST_NGINX_BINARY="$wrapper" TEST_NGINX_TIMEOUT=10 \
    TEST_NGINX_LOAD_MODULES="$BUILD_DIR/$MODULE_NAME-asan.so" \
        prove -I"$ROOT/t/lib" -j1 "$ROOT"/t/002-*.t "$ROOT"/t/0[1-9]*.t || return 1
    if compgen -G "$TEST_TMP/asan/*" >/dev/null; then
        echo "sanitizer reports:" >&2
        head -n 40 "$TEST_TMP"/asan/* >&2
        return 1
    fi
}

# a subset under valgrind, as upstream Test::Nginx's check-leak mode does:
# invalid reads/writes and definite leaks of the module fail it
test_valgrind_suite() {
    local wrapper="$TEST_TMP/nginx-valgrind" vg="$TEST_TMP/valgrind"
    mkdir -p "$vg"
    cat > "$wrapper" <<WRAPPER
#!/bin/sh
exec valgrind -q --trace-children=yes --leak-check=full \\
    --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
    --suppressions=$ROOT/t/valgrind.supp --log-file=$vg/vg.%p $NGINX_BIN "\$@"
WRAPPER
    chmod +x "$wrapper"
    # the release module, as exported in TEST_NGINX_LOAD_MODULES;
    # memcheck runs nginx some 20 times slower: give each request time
    TEST_NGINX_BINARY="$wrapper" TEST_NGINX_TIMEOUT=30 \
        prove -I"$ROOT/t/lib" "$ROOT/t/010-status.t" "$ROOT/t/030-reconcile.t" || return 1
    if [ -n "$(find "$vg" -type f -size +0c)" ]; then
        echo "valgrind reports:" >&2
        find "$vg" -type f -size +0c -exec head -n 40 {} + >&2
        return 1
    fi
}

# every libFuzzer harness for a bounded time; a crash fails the suite
test_fuzz_suite() {
    local log="$TEST_TMP/fuzz.log"
    if ! make -s -C "$ROOT/fuzz" run SECONDS="${FUZZ_SECONDS:-15}" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        return 1
    fi
    grep -E '^== |stat::number_of_executed_units' "$log" | paste - - \
        | awk '{ printf "  %-12s %10s runs, no crash\n", $2, $NF }'
}

# docs/openapi.yaml against the OpenAPI 3.0 rules and docs/redocly.yaml
# (every recommended rule an error); the t/ suite checks the answers
# against the same document (t/lib/BillingTest/OpenAPI.pm).
test_openapi_lint() {
    npm_tools || return 1
    REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
        "$BUILD_DIR/npm/node_modules/.bin/redocly" lint \
        --config "$ROOT/docs/redocly.yaml" "$ROOT/docs/openapi.yaml"
}

test_main() {
    local failed=0 suites=0

    test_setup

    run_suite() {
        local name=$1
        shift
        suites=$((suites + 1))
        log "suite: $name"
        if ! "$@"; then
            printf 'build.sh: suite "%s" FAILED\n' "$name" >&2
            failed=$((failed + 1))
        fi
    }

    run_suite "unit tests (pure core)" make -s -C "$ROOT/tests/unit" check
    run_suite "API description (redocly lint docs/openapi.yaml)" test_openapi_lint
    run_suite "nginx tests (t/*.t)" \
        prove -I"$ROOT/t/lib" -j1 "$ROOT"/t/*.t
    run_suite "nginx tests under ASan/UBSan" test_asan_suite
    run_suite "nginx tests under valgrind (subset)" test_valgrind_suite
    run_suite "fuzzing (bounded)" test_fuzz_suite
    if [ -x "$ROOT/deployment/check.sh" ]; then
        run_suite "deployment checks" \
            env BILLING_MODULE_SO="$BUILD_DIR/$MODULE_NAME.so" "$ROOT/deployment/check.sh"
    fi

    printf '%d passed, %d failed\n' "$((suites - failed))" "$failed"
    [ "$failed" -eq 0 ]
}
