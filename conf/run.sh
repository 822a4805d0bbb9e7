# shellcheck shell=bash
# Sourced by ./build.sh run / stop: a local PostgreSQL (unless DATABASE_URL
# is given), migrations, a development key pair, and nginx with the module
# on 127.0.0.1:$BILLING_PORT. Everything it writes lives under .run/.

RUN_DIR="$ROOT/.run"

run_defaults() {
    : "${BILLING_PORT:=8080}"
    : "${JWT_ISSUER:=https://student-pilot.replit.app}"
    : "${JWT_AUDIENCE:=https://billing.scholarlink.app}"
    : "${STRIPE_API_BASE:=https://api.stripe.com}"
    : "${STRIPE_SECRET_KEY:=sk_test_development_only}"
    : "${STRIPE_WEBHOOK_SECRET:=whsec_development_only}"
    : "${WEBHOOK_SHARED_SECRET:=development-only}"
    : "${BILLING_CORS_ORIGINS:=https://student-pilot.replit.app}"
    : "${BILLING_RATE_LIMIT_PER_MINUTE:=100}"
    export BILLING_PORT JWT_ISSUER JWT_AUDIENCE STRIPE_API_BASE STRIPE_SECRET_KEY \
        STRIPE_WEBHOOK_SECRET WEBHOOK_SHARED_SECRET
    case "$BILLING_RATE_LIMIT_PER_MINUTE" in
        ''|*[!0-9]*) die "BILLING_RATE_LIMIT_PER_MINUTE must be a number (0 turns it off)" ;;
    esac
}

run_database() {
    local admin_url
    if [ -n "${DATABASE_URL:-}" ]; then
        log "using DATABASE_URL from the environment"
        admin_url=${MIGRATE_DATABASE_URL:-$DATABASE_URL}
        # the server's login (DATABASE_URL's) may SET ROLE billing_app
        "$ROOT/sql/migrate.sh" --grant-runtime "$admin_url"
        return
    fi

    log "starting a local PostgreSQL in .run/pg"
    "$ROOT/t/pgserver.sh" start "$RUN_DIR/pg" >/dev/null
    # shellcheck disable=SC1091
    . "$RUN_DIR/pg/env"
    DATABASE_URL="$TEST_NGINX_DATABASE_URL?connection_limit=10"
    export DATABASE_URL
    "$ROOT/sql/migrate.sh" --grant-runtime "$BILLING_TEST_ADMIN_URL"
}

run_keys() {
    if [ -n "${JWT_PUBLIC_KEY:-}" ]; then
        return
    fi
    if [ ! -f "$RUN_DIR/jwt-private.pem" ]; then
        log "generating a development RS256 key pair in .run/"
        (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
            -out "$RUN_DIR/jwt-private.pem" 2>/dev/null)
        openssl pkey -in "$RUN_DIR/jwt-private.pem" -pubout -out "$RUN_DIR/jwt-public.pem"
    fi
    JWT_PUBLIC_KEY=$(cat "$RUN_DIR/jwt-public.pem")
    export JWT_PUBLIC_KEY
}

run_render() {
    local limit=""
    if [ "$BILLING_RATE_LIMIT_PER_MINUTE" != 0 ]; then
        limit="limit_req zone=billing_user burst=20 nodelay;"
    fi
    mkdir -p "$RUN_DIR/tmp"
    # the rate must be positive even when the zone is unused
    sed -e "s|@MODULE@|$BUILD_DIR/$MODULE_NAME.so|" \
        -e "s|@RUN_DIR@|$RUN_DIR|g" \
        -e "s|@BILLING_PORT@|$BILLING_PORT|g" \
        -e "s|@STRIPE_API_BASE@|$STRIPE_API_BASE|" \
        -e "s|@BILLING_CORS_ORIGINS@|${BILLING_CORS_ORIGINS//,/ }|" \
        -e "s|@BILLING_RATE_LIMIT_PER_MINUTE@|$((BILLING_RATE_LIMIT_PER_MINUTE > 0 ? BILLING_RATE_LIMIT_PER_MINUTE : 1))|" \
        -e "s|@USER_LIMIT@|$limit|" \
        "$ROOT/conf/billing.dev.conf.in" > "$RUN_DIR/nginx.conf"
}

run_token() {
    # $1 subject, $2 scope (optional); signed with the development key
    perl -MCrypt::JWT=encode_jwt -e '
        open my $f, "<", $ARGV[0] or die; local $/; my $k = <$f>;
        my %c = (iss => $ARGV[1], aud => $ARGV[2], sub => $ARGV[3],
                 iat => time, exp => time + 86400);
        $c{scope} = $ARGV[4] if length $ARGV[4];
        print encode_jwt(payload => \%c, alg => "RS256", key => \$k);
    ' "$RUN_DIR/jwt-private.pem" "$JWT_ISSUER" "$JWT_AUDIENCE" "$1" "${2:-}"
}

run_nginx() {
    local pid
    "$NGINX_BIN" -t -q -p "$RUN_DIR" -c "$RUN_DIR/nginx.conf" \
        || die "nginx rejected .run/nginx.conf (see above)"
    if [ -f "$RUN_DIR/nginx.pid" ] && pid=$(cat "$RUN_DIR/nginx.pid") \
        && kill -0 "$pid" 2>/dev/null; then
        log "nginx already running (pid $pid): reloading"
        kill -HUP "$pid"
    else
        "$NGINX_BIN" -p "$RUN_DIR" -c "$RUN_DIR/nginx.conf"
    fi
}

run_main() {
    mkdir -p "$RUN_DIR"
    chmod 755 "$RUN_DIR"
    run_defaults
    run_database
    run_keys
    run_render
    run_nginx

    local base="http://127.0.0.1:$BILLING_PORT" user_token svc_token
    for _ in $(seq 1 50); do
        curl -fsS "$base/readyz" >/dev/null 2>&1 && break
        sleep 0.2
    done

    if [ ! -f "$RUN_DIR/jwt-private.pem" ]; then
        printf '\nBilling API on %s (JWT_PUBLIC_KEY given: mint tokens with your own key).\n' "$base"
        return
    fi

    user_token=$(run_token test-user-id)
    svc_token=$(run_token ai-backend billing:usage)

    cat <<MSG

Billing API on $base   (logs: .run/error.log, .run/access.log; stop: ./build.sh stop)

User token (sub test-user-id):
  export USER_TOKEN=$user_token
Service token (scope billing:usage):
  export SERVICE_TOKEN=$svc_token

  curl -s $base/health
  curl -s $base/readyz
  curl -s $base/api/packages
  curl -s $base/api/balance -H "Authorization: Bearer \$USER_TOKEN"
  curl -s $base/api/ledger -H "Authorization: Bearer \$USER_TOKEN"

  # Credit Purchase Test (\$5.00): needs a reachable Stripe (STRIPE_API_BASE, STRIPE_SECRET_KEY)
  curl -s -X POST $base/api/purchases -H "Authorization: Bearer \$USER_TOKEN" \\
       -H "Content-Type: application/json" -d '{"packageCode":"starter"}'

  # Usage Reconciliation Test (the user needs credits first: a paid purchase)
  KEY=test-\$(date +%s)
  curl -s -X POST $base/api/usage/reconcile -H "Authorization: Bearer \$SERVICE_TOKEN" \\
       -H "Content-Type: application/json" \\
       -d '{"userId":"test-user-id","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"'\$KEY'"}'

  # Idempotency Test: the same call again answers the original with Idempotent-Replayed: true
  curl -si -X POST $base/api/usage/reconcile -H "Authorization: Bearer \$SERVICE_TOKEN" \\
       -H "Content-Type: application/json" \\
       -d '{"userId":"test-user-id","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"'\$KEY'"}'
MSG
    if [ -n "${BILLING_TEST_ADMIN_URL:-}" ]; then
        cat <<MSG

  # Local only: credit test-user-id with \$5.00 as a paid Stripe webhook would
  ./build.sh fund test-user-id starter
MSG
    fi
}

stop_main() {
    local pid
    if [ -f "$RUN_DIR/nginx.pid" ] && pid=$(cat "$RUN_DIR/nginx.pid") \
        && kill -0 "$pid" 2>/dev/null; then
        log "stopping nginx (pid $pid)"
        kill -QUIT "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    if [ -d "$RUN_DIR/pg/data" ]; then
        log "stopping the local PostgreSQL"
        "$ROOT/t/pgserver.sh" stop "$RUN_DIR/pg" >/dev/null || true
    fi
}

# ./build.sh fund USER [PACKAGE]: local development only. Creates a purchase
# and pays it with a signed payment_intent.succeeded webhook sent to the
# running module, the same path a real Stripe payment takes.
fund_main() {
    local user=${1:?usage: ./build.sh fund USER [PACKAGE]} package=${2:-starter}
    local purchase event ts sig
    run_defaults
    [ -f "$RUN_DIR/pg/env" ] || die "fund needs the local database of ./build.sh run"
    # shellcheck disable=SC1091
    . "$RUN_DIR/pg/env"
    # psql variables are quoted by psql itself (only on stdin, not with -c)
    purchase=$(psql -X -At -v ON_ERROR_STOP=1 -d "$BILLING_TEST_ADMIN_URL" \
        -v user="$user" -v package="$package" <<'SQL'
SELECT body::jsonb->>'purchaseId' FROM billing.api_purchase_create(:'user', :'package')
SQL
    ) || die "cannot create the purchase"
    [ -n "$purchase" ] || die "unknown package $package"
    event="{\"id\":\"evt_dev_$purchase\",\"object\":\"event\",\"type\":\"payment_intent.succeeded\",\"data\":{\"object\":{\"id\":\"pi_dev_$purchase\",\"object\":\"payment_intent\",\"metadata\":{\"purchase_id\":\"$purchase\",\"user_id\":\"$user\"}}}}"
    ts=$(date +%s)
    sig=$(printf '%s.%s' "$ts" "$event" \
          | openssl dgst -sha256 -hmac "$STRIPE_WEBHOOK_SECRET" -r | cut -d' ' -f1)
    curl -sS -X POST "http://127.0.0.1:$BILLING_PORT/webhooks/stripe" \
        -H "Content-Type: application/json" -H "Stripe-Signature: t=$ts,v1=$sig" \
        --data-binary "$event"
    echo
}
