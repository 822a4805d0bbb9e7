# shellcheck shell=bash
# Sourced by ./build.sh run / stop / fund / refund: a local PostgreSQL (unless
# DATABASE_URL is given), migrations, a development key pair, a local Stripe
# stand-in (unless STRIPE_SECRET_KEY is given), a receiver of the module's
# signed notifications (unless BILLING_NOTIFY_URL is given), and nginx with
# the module on 127.0.0.1:$BILLING_PORT. Everything it writes lives under
# .run/ (BILLING_RUN_DIR); t/090-dev-flow.t runs these same functions in a
# directory and on ports of its own.
#
# The caller defines ROOT, BUILD_DIR, MODULE_NAME, NGINX_BIN, log and die
# (build.sh does).

RUN_DIR=${BILLING_RUN_DIR:-$ROOT/.run}

run_number() {
    # $1 name, $2 value, $3 what 0 means (optional)
    case "$2" in
        ''|*[!0-9]*) die "$1 must be a number${3:+ ($3)}" ;;
    esac
}

run_defaults() {
    : "${BILLING_PORT:=8080}"
    : "${BILLING_STRIPE_STANDIN_PORT:=$((BILLING_PORT + 1))}"
    : "${BILLING_NOTIFY_PORT:=$((BILLING_PORT + 2))}"
    : "${JWT_ISSUER:=https://student-pilot.replit.app}"
    : "${JWT_AUDIENCE:=https://billing.scholarlink.app}"
    : "${BILLING_CORS_ORIGINS:=https://student-pilot.replit.app}"
    : "${BILLING_RATE_LIMIT_PER_MINUTE:=100}"
    : "${BILLING_SERVICE_RATE_LIMIT_PER_MINUTE:=6000}"
    : "${BILLING_DEV_USER:=test-user-id}"
    run_number BILLING_PORT "$BILLING_PORT"
    run_number BILLING_STRIPE_STANDIN_PORT "$BILLING_STRIPE_STANDIN_PORT"
    run_number BILLING_NOTIFY_PORT "$BILLING_NOTIFY_PORT"
    run_number BILLING_RATE_LIMIT_PER_MINUTE "$BILLING_RATE_LIMIT_PER_MINUTE" "0 turns it off"
    run_number BILLING_SERVICE_RATE_LIMIT_PER_MINUTE "$BILLING_SERVICE_RATE_LIMIT_PER_MINUTE" "0 turns it off"

    run_secrets
    # No Stripe key: the local stand-in plays Stripe, with a key and a
    # webhook secret made for this checkout (docs/development.md).
    if [ -z "${STRIPE_SECRET_KEY:-}" ]; then
        RUN_STANDIN_URL="http://127.0.0.1:$BILLING_STRIPE_STANDIN_PORT"
        STRIPE_SECRET_KEY=$DEV_STRIPE_SECRET_KEY
        STRIPE_API_BASE=$RUN_STANDIN_URL
    else
        RUN_STANDIN_URL=""
        : "${STRIPE_API_BASE:=https://api.stripe.com}"
    fi
    : "${STRIPE_WEBHOOK_SECRET:=$DEV_STRIPE_WEBHOOK_SECRET}"
    : "${WEBHOOK_SHARED_SECRET:=$DEV_WEBHOOK_SHARED_SECRET}"
    # No notification URL: a local receiver checks and shows what is sent.
    if [ -z "${BILLING_NOTIFY_URL:-}" ]; then
        RUN_RECEIVER_URL="http://127.0.0.1:$BILLING_NOTIFY_PORT"
        BILLING_NOTIFY_URL="$RUN_RECEIVER_URL/hooks/billing"
    else
        RUN_RECEIVER_URL=""
    fi
    export BILLING_PORT JWT_ISSUER JWT_AUDIENCE STRIPE_API_BASE STRIPE_SECRET_KEY \
        STRIPE_WEBHOOK_SECRET WEBHOOK_SHARED_SECRET
}

# Development secrets, made once per checkout and kept in .run/: a running
# nginx keeps the environment it started with, so they must not change
# between two `./build.sh run`.
run_secrets() {
    local f="$RUN_DIR/dev-secrets"
    if [ ! -s "$f" ]; then
        mkdir -p "$RUN_DIR"
        (
            umask 077
            printf 'DEV_STRIPE_SECRET_KEY=sk_test_dev_%s\n' "$(openssl rand -hex 16)"
            printf 'DEV_STRIPE_WEBHOOK_SECRET=whsec_dev_%s\n' "$(openssl rand -hex 24)"
            printf 'DEV_WEBHOOK_SHARED_SECRET=dev_%s\n' "$(openssl rand -hex 24)"
        ) > "$f.tmp"
        mv "$f.tmp" "$f"
    fi
    # shellcheck disable=SC1090
    . "$f"
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

# dev/stripe-standin: the Stripe stand-in and the notification receiver,
# whichever is needed, in one process of its own session (a Ctrl-C in the
# terminal does not reach it); restarted by every run, its sessions kept.
run_standin() {
    local args=() pid_file="$RUN_DIR/stripe-standin.pid" url_file="$RUN_DIR/stripe-standin.url"
    run_standin_stop
    if [ -n "$RUN_STANDIN_URL" ]; then
        args+=(--stripe-port "$BILLING_STRIPE_STANDIN_PORT"
               --webhook-url "http://127.0.0.1:$BILLING_PORT/webhooks/stripe")
    fi
    if [ -n "$RUN_RECEIVER_URL" ]; then
        args+=(--notify-port "$BILLING_NOTIFY_PORT")
    fi
    ((${#args[@]})) || return 0
    log "starting the local Stripe stand-in / notification receiver (log: $RUN_DIR/stripe-standin.log)"
    rm -f "$url_file"
    # secrets reach it through the environment (exported above), not argv
    setsid perl "$ROOT/dev/stripe-standin" --dir "$RUN_DIR/stripe" --url-file "$url_file" \
        "${args[@]}" >>"$RUN_DIR/stripe-standin.log" 2>&1 </dev/null &
    echo $! > "$pid_file"
    for _ in $(seq 1 100); do
        [ -s "$url_file" ] && return 0
        kill -0 "$(cat "$pid_file")" 2>/dev/null || break
        sleep 0.1
    done
    die "the Stripe stand-in did not start: $(tail -n 3 "$RUN_DIR/stripe-standin.log")
(BILLING_STRIPE_STANDIN_PORT and BILLING_NOTIFY_PORT choose other ports)"
}

run_standin_stop() {
    local pid
    if [ -f "$RUN_DIR/stripe-standin.pid" ] && pid=$(cat "$RUN_DIR/stripe-standin.pid") \
        && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$RUN_DIR/stripe-standin.pid"
}

run_render() {
    local limit="" service_limit=""
    if [ "$BILLING_RATE_LIMIT_PER_MINUTE" != 0 ]; then
        limit="limit_req zone=billing_user burst=20 nodelay;"
    fi
    if [ "$BILLING_SERVICE_RATE_LIMIT_PER_MINUTE" != 0 ]; then
        service_limit="limit_req zone=billing_service burst=200 nodelay;"
    fi
    mkdir -p "$RUN_DIR/tmp"
    # a zone's rate must be positive even when the zone is unused
    sed -e "s|@MODULE@|${BILLING_MODULE_SO:-$BUILD_DIR/$MODULE_NAME.so}|" \
        -e "s|@RUN_DIR@|$RUN_DIR|g" \
        -e "s|@ROOT@|$ROOT|g" \
        -e "s|@BILLING_PORT@|$BILLING_PORT|g" \
        -e "s|@STRIPE_API_BASE@|$STRIPE_API_BASE|" \
        -e "s|@NOTIFY_URL@|$BILLING_NOTIFY_URL|" \
        -e "s|@BILLING_CORS_ORIGINS@|${BILLING_CORS_ORIGINS//,/ }|" \
        -e "s|@BILLING_RATE_LIMIT_PER_MINUTE@|$((BILLING_RATE_LIMIT_PER_MINUTE > 0 ? BILLING_RATE_LIMIT_PER_MINUTE : 1))|" \
        -e "s|@BILLING_SERVICE_RATE_LIMIT_PER_MINUTE@|$((BILLING_SERVICE_RATE_LIMIT_PER_MINUTE > 0 ? BILLING_SERVICE_RATE_LIMIT_PER_MINUTE : 1))|" \
        -e "s|@USER_LIMIT@|$limit|" \
        -e "s|@SERVICE_LIMIT@|$service_limit|" \
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
        || die "nginx rejected $RUN_DIR/nginx.conf (see above)"
    if [ -f "$RUN_DIR/nginx.pid" ] && pid=$(cat "$RUN_DIR/nginx.pid") \
        && kill -0 "$pid" 2>/dev/null; then
        log "nginx already running (pid $pid): reloading"
        kill -HUP "$pid"
    else
        "$NGINX_BIN" -p "$RUN_DIR" -c "$RUN_DIR/nginx.conf"
    fi
}

# what fund and refund need to know about the running instance
run_save() {
    {
        printf 'BILLING_PORT=%q\n' "$BILLING_PORT"
        printf 'JWT_ISSUER=%q\n' "$JWT_ISSUER"
        printf 'JWT_AUDIENCE=%q\n' "$JWT_AUDIENCE"
        printf 'RUN_STANDIN_URL=%q\n' "$RUN_STANDIN_URL"
        printf 'RUN_RECEIVER_URL=%q\n' "$RUN_RECEIVER_URL"
    } > "$RUN_DIR/run.env"
}

run_saved() {
    [ -f "$RUN_DIR/run.env" ] || die "nothing is running: start it with ./build.sh run"
    # shellcheck disable=SC1091
    . "$RUN_DIR/run.env"
}

# everything after the database: keys, stand-in, config, nginx
run_start() {
    run_keys
    run_standin
    run_render
    run_nginx
    run_save
}

run_wait_ready() {
    for _ in $(seq 1 50); do
        curl -fsS "http://127.0.0.1:$BILLING_PORT/readyz" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "not ready yet: see $RUN_DIR/error.log"
}

run_main() {
    mkdir -p "$RUN_DIR"
    chmod 755 "$RUN_DIR"
    run_defaults
    run_database
    run_start
    run_wait_ready
    run_message
}

# The set-up, printed: the deployment checklist's functional tests as
# copy-paste commands (the indented lines run as they are, in this order:
# t/090-dev-flow.t runs them).
run_message() {
    local base="http://127.0.0.1:$BILLING_PORT" user_token svc_token admin_token
    local u=$BILLING_DEV_USER

    if [ ! -f "$RUN_DIR/jwt-private.pem" ]; then
        printf '\nBilling API on %s (JWT_PUBLIC_KEY given: mint tokens with your own key).\n' "$base"
        return
    fi

    user_token=$(run_token "$u")
    svc_token=$(run_token ai-backend billing:usage)
    admin_token=$(run_token support-dev billing:admin)

    cat <<MSG

Billing API on $base   (logs: .run/error.log, .run/access.log; stop: ./build.sh stop)
MSG
    if [ -n "$RUN_STANDIN_URL" ]; then
        cat <<MSG
Stripe: a local stand-in on $RUN_STANDIN_URL (test mode, no network; log: .run/stripe-standin.log)
MSG
    fi
    if [ -n "$RUN_RECEIVER_URL" ]; then
        cat <<MSG
Notifications: signed with WEBHOOK_SHARED_SECRET, checked and shown by $RUN_RECEIVER_URL/
MSG
    fi
    cat <<MSG

Tokens, signed with the development key in .run/: user $u, the AI backend (scope
billing:usage) and support (scope billing:admin)
  export USER_TOKEN=$user_token
  export SERVICE_TOKEN=$svc_token
  export ADMIN_TOKEN=$admin_token

Health
  curl -s $base/health
  curl -s $base/readyz
  curl -s $base/api/packages

Credit Purchase Test (\$5.00): the purchase, with a Stripe Checkout Session
  PURCHASE=\$(curl -s -X POST $base/api/purchases -H "Authorization: Bearer \$USER_TOKEN" \\
      -H "Content-Type: application/json" -d '{"packageCode":"starter"}'); echo "\$PURCHASE"
  PURCHASE_ID=\$(echo "\$PURCHASE" | sed -n 's/.*"purchaseId":"\([^"]*\)".*/\1/p')
  CHECKOUT_URL=\$(echo "\$PURCHASE" | sed -n 's/.*"checkoutUrl":"\([^"]*\)".*/\1/p')
MSG
    if [ -n "$RUN_STANDIN_URL" ]; then
        cat <<MSG
Pay: open \$CHECKOUT_URL in a browser and press Pay, or with curl. The stand-in sends the
module checkout.session.completed, then payment_intent.succeeded, signed as Stripe does.
  curl -s -d action=pay "\$CHECKOUT_URL"
MSG
    else
        cat <<MSG
Pay: open \$CHECKOUT_URL in a browser and pay with a Stripe test card (4242 4242 4242 4242).
Stripe must reach /webhooks/stripe: e.g. stripe listen --forward-to $base/webhooks/stripe
(and STRIPE_WEBHOOK_SECRET set to the secret it prints).
  echo "\$CHECKOUT_URL"
MSG
    fi
    cat <<MSG
The balance grows by \$5.00 (5000000 micros: balanceMicros 5000000 on the first run); the
ledger shows the purchase, and the purchase is paid
  curl -s $base/api/balance -H "Authorization: Bearer \$USER_TOKEN"
  curl -s $base/api/ledger -H "Authorization: Bearer \$USER_TOKEN"
  curl -s $base/api/purchases/\$PURCHASE_ID -H "Authorization: Bearer \$USER_TOKEN"

Usage Reconciliation Test: gpt-4o, 1000 + 500 tokens cost 7500 micros
  KEY=test-\$(date +%s)
  curl -s -X POST $base/api/usage/reconcile -H "Authorization: Bearer \$SERVICE_TOKEN" \\
      -H "Content-Type: application/json" \\
      -d '{"userId":"$u","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"'\$KEY'"}'

Idempotency Test: the same call again answers the first answer with Idempotent-Replayed: true;
the balance is charged once
  curl -si -X POST $base/api/usage/reconcile -H "Authorization: Bearer \$SERVICE_TOKEN" \\
      -H "Content-Type: application/json" \\
      -d '{"userId":"$u","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"'\$KEY'"}'
  curl -s $base/api/balance -H "Authorization: Bearer \$USER_TOKEN"
MSG
    if [ -n "$RUN_STANDIN_URL" ]; then
        cat <<MSG

Refund \$1.00 of the purchase: the stand-in sends charge.refunded (cumulative amount_refunded);
the module debits 1000000 micros
  ./build.sh refund "\$PURCHASE_ID" 100
  curl -s $base/api/balance -H "Authorization: Bearer \$USER_TOKEN"
MSG
    fi
    if [ -n "$RUN_RECEIVER_URL" ]; then
        cat <<MSG

What the application is told (purchase.completed, purchase.refunded), signatures checked
  sleep 2; curl -s $RUN_RECEIVER_URL/
MSG
    fi
    cat <<MSG

Where the credits went (today, UTC, per model), and support's view of the user
  curl -s "$base/api/usage/summary?from=\$(date -u +%F)&to=\$(date -u +%F)&groupBy=model" \\
      -H "Authorization: Bearer \$USER_TOKEN"
  curl -s $base/api/admin/users/$u/balance -H "Authorization: Bearer \$ADMIN_TOKEN"; echo
MSG
    if [ -n "$RUN_STANDIN_URL" ]; then
        cat <<MSG

Shortcut: a paid \$5.00 purchase for any user, through the same API and stand-in
  ./build.sh fund $u starter
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
    if [ -f "$RUN_DIR/stripe-standin.pid" ]; then
        log "stopping the Stripe stand-in"
        run_standin_stop
    fi
    rm -f "$RUN_DIR/run.env"
    if [ -d "$RUN_DIR/pg/data" ]; then
        log "stopping the local PostgreSQL"
        "$ROOT/t/pgserver.sh" stop "$RUN_DIR/pg" >/dev/null || true
    fi
}

# ./build.sh fund USER [PACKAGE]: the purchase flow in one step, for the
# running instance: a purchase through the API (a token of the development
# key), paid on the stand-in's checkout page, which sends Stripe's events
# to the module.
fund_main() {
    local user=${1:?usage: ./build.sh fund USER [PACKAGE]} package=${2:-starter}
    local token answer url
    run_saved
    case "$package" in
        ''|*[!a-z0-9_-]*) die "a package code is lower-case letters, digits, - and _" ;;
    esac
    [ -f "$RUN_DIR/jwt-private.pem" ] \
        || die "fund signs a token with ./build.sh run's development key (none: JWT_PUBLIC_KEY was given)"
    [ -n "$RUN_STANDIN_URL" ] \
        || die "fund pays on the local Stripe stand-in, which runs only without STRIPE_SECRET_KEY"
    token=$(run_token "$user")
    answer=$(curl -sS -X POST "http://127.0.0.1:$BILLING_PORT/api/purchases" \
        -H "Authorization: Bearer $token" -H "Content-Type: application/json" \
        -d "{\"packageCode\":\"$package\"}") \
        || die "the billing API on port $BILLING_PORT does not answer: is ./build.sh run up?"
    printf 'POST /api/purchases: %s\n\n' "$answer"
    url=$(printf '%s' "$answer" | sed -n 's/.*"checkoutUrl":"\([^"]*\)".*/\1/p')
    [ -n "$url" ] || die "the purchase was not created (see the answer above)"
    case "$url" in
        "$RUN_STANDIN_URL"/*) ;;
        *) die "the checkout URL is not the stand-in's: pay it in a browser: $url" ;;
    esac
    curl -sS --fail-with-body -d action=pay "$url"
}

# ./build.sh refund PURCHASE_ID|SESSION_ID [CENTS]: refunds a paid purchase
# (all that is left, or CENTS) on the stand-in, which sends charge.refunded.
refund_main() {
    local id=${1:?usage: ./build.sh refund PURCHASE_ID|SESSION_ID [CENTS]} cents=${2:-}
    run_saved
    [ -n "$RUN_STANDIN_URL" ] \
        || die "refunds go through the local Stripe stand-in, which runs only without STRIPE_SECRET_KEY (at Stripe: its dashboard)"
    case "$id" in
        ''|*[!A-Za-z0-9_-]*) die "not a purchase or session id: $id" ;;
    esac
    [ -z "$cents" ] || run_number CENTS "$cents"
    curl -sS --fail-with-body -d action=refund ${cents:+-d "amount=$cents"} \
        "$RUN_STANDIN_URL/c/pay/$id"
}
