#!/usr/bin/env bash
# Post-deployment verification: the deployment checklist's "Verification
# Tests" against a running billing service. Prints PASS/FAIL/SKIP per check
# and exits non-zero if any check failed. Needs only curl and POSIX tools.
#
#   BASE_URL=https://billing.scholarlink.app USER_TOKEN=... SERVICE_TOKEN=... \
#     ./deployment/billing/verify.sh
#
# Environment:
#   BASE_URL          service URL (default https://billing.scholarlink.app)
#   USER_TOKEN        RS256 JWT of a test user (required for user checks)
#   SERVICE_TOKEN     RS256 JWT with scope billing:usage (required for reconcile)
#   USER_ID           user charged by the reconcile test (default: USER_TOKEN's sub)
#   METRICS_URL       where /metrics is reachable (it is network-restricted; e.g.
#                     kubectl -n scholarlink-prod port-forward deploy/scholarlink-billing 8080
#                     then METRICS_URL=http://127.0.0.1:8080/metrics). Default
#                     BASE_URL/metrics; SKIP_METRICS=1 skips.
#   EXPECT_PURCHASE_STATUS  expected POST /api/purchases status (default 201;
#                     502 is what a failing Stripe stand-in gives)
#   PURCHASE_PACKAGE  package code (default starter = $5.00)
#   FUND_FIRST        optional shell command run before the reconcile test
#                     (e.g. a psql/Stripe-test-mode top-up of USER_ID)
#   RECONCILE_MODEL   model for the reconcile test (default gpt-4o)
#   ORIGIN_ALLOWED    CORS origin that must be allowed (default https://student-pilot.replit.app)
#   ORIGIN_DENIED     CORS origin that must not be (default https://evil.example)
#   RATE_LIMIT_BURST  per-user burst (default 20); RATE_LIMIT_EXTRA more (default 40)
#   RATE_LIMIT_PODS   pods behind the ingress (default 2): each keeps its own
#                     count, so PODS x (BURST + 1) requests pass before a 429
#   SKIP_RATE_LIMIT=1 skip the rate-limit test (it uses up USER_TOKEN's allowance
#                     for about a minute, so it runs last)
#   CURL_OPTS         extra curl options, e.g. "-k" or "--resolve host:443:1.2.3.4"
set -uo pipefail

BASE_URL="${BASE_URL:-https://billing.scholarlink.app}"
BASE_URL="${BASE_URL%/}"
USER_TOKEN="${USER_TOKEN:-}"
SERVICE_TOKEN="${SERVICE_TOKEN:-}"
METRICS_URL="${METRICS_URL:-$BASE_URL/metrics}"
EXPECT_PURCHASE_STATUS="${EXPECT_PURCHASE_STATUS:-201}"
PURCHASE_PACKAGE="${PURCHASE_PACKAGE:-starter}"
RECONCILE_MODEL="${RECONCILE_MODEL:-gpt-4o}"
ORIGIN_ALLOWED="${ORIGIN_ALLOWED:-https://student-pilot.replit.app}"
ORIGIN_DENIED="${ORIGIN_DENIED:-https://evil.example}"
RATE_LIMIT_BURST="${RATE_LIMIT_BURST:-20}"
RATE_LIMIT_EXTRA="${RATE_LIMIT_EXTRA:-40}"
RATE_LIMIT_PODS="${RATE_LIMIT_PODS:-2}"
CURL_OPTS="${CURL_OPTS:-}"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
PASS=0 FAIL=0 SKIP=0
STATUS='' BODY='' HEADERS=''

pass() { echo "PASS $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $*"; FAIL=$((FAIL + 1)); }
skip() { echo "SKIP $*"; SKIP=$((SKIP + 1)); }

# req METHOD URL [extra curl args...]: sets STATUS, BODY, HEADERS.
req() {
    local method="$1" url="$2"; shift 2
    # shellcheck disable=SC2086
    STATUS="$(curl -sS $CURL_OPTS --max-time 20 -X "$method" -D "$TMP/h" -o "$TMP/b" \
        -w '%{http_code}' "$@" "$url" 2>"$TMP/e")" || STATUS="${STATUS:-000}"
    BODY="$(cat "$TMP/b" 2>/dev/null)"
    HEADERS="$(tr -d '\r' <"$TMP/h" 2>/dev/null)"
    [ "$STATUS" != 000 ] || BODY="$(cat "$TMP/e")"
}

# header NAME: value of a response header (case-insensitive), last one wins.
header() {
    printf '%s\n' "$HEADERS" | grep -i "^$1:" | tail -n1 | sed 's/^[^:]*:[[:space:]]*//'
}

# json_str FIELD: first string (or number) value of a top-level-ish field.
json_field() {
    printf '%s' "$BODY" | sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n1
}

short() { printf '%s' "$1" | tr '\n' ' ' | cut -c1-200; }

b64url() { base64 | tr -d '=\n' | tr '/+' '_-'; }

jwt_sub() {
    local p
    p="$(printf '%s' "$1" | cut -d. -f2 | tr '_-' '/+')"
    while [ $(( ${#p} % 4 )) -ne 0 ]; do p="$p="; done
    printf '%s' "$p" | base64 -d 2>/dev/null | sed -n 's/.*"sub"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p'
}

echo "verifying ${BASE_URL}"

# --- health -------------------------------------------------------------------
req GET "$BASE_URL/health"
if [ "$STATUS" = 200 ]; then pass "GET /health 200"; else fail "GET /health: $STATUS $(short "$BODY")"; fi

req GET "$BASE_URL/readyz"
if [ "$STATUS" = 200 ] && printf '%s' "$BODY" | grep -q '"ready"'; then
    pass "GET /readyz 200 ready"
else
    fail "GET /readyz: $STATUS $(short "$BODY") (database or migrations: docs/troubleshooting.md)"
fi

if [ "${SKIP_METRICS:-}" = 1 ]; then
    skip "GET /metrics (SKIP_METRICS=1)"
else
    req GET "$METRICS_URL"
    if [ "$STATUS" = 200 ] && printf '%s' "$BODY" | grep -q '^billing_http_requests_total'; then
        pass "GET ${METRICS_URL} exposes billing_http_requests_total"
    else
        fail "GET ${METRICS_URL}: $STATUS (metrics are restricted to the internal port: set METRICS_URL)"
    fi
fi

# --- TLS and security headers -------------------------------------------------
case "$BASE_URL" in
    https://*)
        req GET "$BASE_URL/health"
        hsts="$(header Strict-Transport-Security)"
        if printf '%s' "$hsts" | grep -q 'max-age=[1-9]'; then pass "HSTS: $hsts"; else fail "HSTS header missing"; fi
        if [ "$(header X-Content-Type-Options)" = nosniff ] && [ "$(header X-Frame-Options)" = DENY ]; then
            pass "X-Content-Type-Options nosniff, X-Frame-Options DENY"
        else
            fail "security headers missing (X-Content-Type-Options/X-Frame-Options)"
        fi
        req GET "http://${BASE_URL#https://}/health"
        case "$STATUS" in
            301|302|307|308) pass "plain HTTP redirected to HTTPS ($STATUS)" ;;
            000) pass "plain HTTP not served (connection refused)" ;;
            *) fail "plain HTTP answered $STATUS instead of redirecting to HTTPS" ;;
        esac
        ;;
    *) skip "TLS checks (BASE_URL is not https)" ;;
esac

# --- JWT rejection -----------------------------------------------------------
req GET "$BASE_URL/api/balance"
if [ "$STATUS" = 401 ] && header WWW-Authenticate | grep -qi '^Bearer'; then
    pass "no token: 401 with WWW-Authenticate: $(header WWW-Authenticate)"
else
    fail "no token: expected 401 + WWW-Authenticate Bearer, got $STATUS"
fi

req GET "$BASE_URL/api/balance" -H 'Authorization: Bearer not.a.jwt'
if [ "$STATUS" = 401 ]; then pass "garbage token: 401"; else fail "garbage token: expected 401, got $STATUS"; fi

now="$(date +%s)"
claims="{\"sub\":\"verify-attacker\",\"iat\":${now},\"exp\":$((now + 300)),\"scope\":\"billing:usage\"}"
none_jwt="$(printf '{"alg":"none","typ":"JWT"}' | b64url).$(printf '%s' "$claims" | b64url)."
req GET "$BASE_URL/api/balance" -H "Authorization: Bearer ${none_jwt}"
if [ "$STATUS" = 401 ]; then pass "alg=none token: 401"; else fail "alg=none token: expected 401, got $STATUS"; fi

hs_input="$(printf '{"alg":"HS256","typ":"JWT"}' | b64url).$(printf '%s' "$claims" | b64url)"
hs_sig="$(printf '%s' "$hs_input" | openssl dgst -sha256 -hmac secret -binary 2>/dev/null | b64url)"
if [ -n "$hs_sig" ]; then
    req GET "$BASE_URL/api/balance" -H "Authorization: Bearer ${hs_input}.${hs_sig}"
    if [ "$STATUS" = 401 ]; then pass "HS256 token: 401"; else fail "HS256 token: expected 401, got $STATUS"; fi
fi

# --- CORS --------------------------------------------------------------------
req GET "$BASE_URL/api/packages" -H "Origin: ${ORIGIN_ALLOWED}"
if [ "$(header Access-Control-Allow-Origin)" = "$ORIGIN_ALLOWED" ]; then
    pass "CORS: ${ORIGIN_ALLOWED} allowed"
else
    fail "CORS: ${ORIGIN_ALLOWED} got Access-Control-Allow-Origin '$(header Access-Control-Allow-Origin)'"
fi
req OPTIONS "$BASE_URL/api/purchases" -H "Origin: ${ORIGIN_ALLOWED}" \
    -H 'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: authorization, content-type'
if [ "$(header Access-Control-Allow-Origin)" = "$ORIGIN_ALLOWED" ] && [ "${STATUS#2}" != "$STATUS" ]; then
    pass "CORS preflight from ${ORIGIN_ALLOWED}: $STATUS"
else
    fail "CORS preflight from ${ORIGIN_ALLOWED}: $STATUS, ACAO '$(header Access-Control-Allow-Origin)'"
fi
req GET "$BASE_URL/api/packages" -H "Origin: ${ORIGIN_DENIED}"
if [ "$STATUS" != 000 ] && [ -z "$(header Access-Control-Allow-Origin)" ]; then
    pass "CORS: ${ORIGIN_DENIED} denied (no Access-Control-Allow-Origin)"
else
    fail "CORS: ${ORIGIN_DENIED}: status $STATUS, Access-Control-Allow-Origin '$(header Access-Control-Allow-Origin)'"
fi

# --- user flow ---------------------------------------------------------------
if [ -z "$USER_TOKEN" ]; then
    skip "purchase, ledger (USER_TOKEN not set)"
else
    req POST "$BASE_URL/api/purchases" -H "Authorization: Bearer ${USER_TOKEN}" \
        -H 'Content-Type: application/json' -d "{\"packageCode\":\"${PURCHASE_PACKAGE}\"}"
    if [ "$STATUS" = "$EXPECT_PURCHASE_STATUS" ]; then
        if [ "$STATUS" = 201 ] && ! printf '%s' "$BODY" | grep -q '"checkoutUrl"'; then
            fail "POST /api/purchases 201 without checkoutUrl: $(short "$BODY")"
        else
            pass "POST /api/purchases ${PURCHASE_PACKAGE}: $STATUS purchaseId=$(json_field purchaseId)"
        fi
    else
        fail "POST /api/purchases: expected $EXPECT_PURCHASE_STATUS, got $STATUS $(short "$BODY")"
    fi

    req GET "$BASE_URL/api/ledger" -H "Authorization: Bearer ${USER_TOKEN}"
    if [ "$STATUS" = 200 ] && printf '%s' "$BODY" | grep -q '"entries"[[:space:]]*:[[:space:]]*\['; then
        pass "GET /api/ledger 200 with entries (balanceMicros=$(json_field balanceMicros))"
    else
        fail "GET /api/ledger: $STATUS $(short "$BODY")"
    fi
fi

# --- usage reconciliation + idempotency ---------------------------------------
USER_ID="${USER_ID:-$(jwt_sub "$USER_TOKEN")}"
if [ -z "$SERVICE_TOKEN" ] || [ -z "$USER_ID" ]; then
    skip "reconcile, idempotency (SERVICE_TOKEN and USER_ID/USER_TOKEN needed)"
else
    if [ -n "${FUND_FIRST:-}" ]; then
        if bash -c "$FUND_FIRST"; then pass "FUND_FIRST hook"; else fail "FUND_FIRST hook failed"; fi
    fi
    key="verify-$(date +%s)-$$"
    body="{\"userId\":\"${USER_ID}\",\"model\":\"${RECONCILE_MODEL}\",\"inputTokens\":1000,\"outputTokens\":500,\"idempotencyKey\":\"${key}\"}"
    req POST "$BASE_URL/api/usage/reconcile" -H "Authorization: Bearer ${SERVICE_TOKEN}" \
        -H 'Content-Type: application/json' -d "$body"
    entry="$(json_field entryId)"
    if [ "$STATUS" = 201 ] && [ -n "$entry" ]; then
        pass "POST /api/usage/reconcile 201 entryId=${entry} chargedMicros=$(json_field chargedMicros)"
        req POST "$BASE_URL/api/usage/reconcile" -H "Authorization: Bearer ${SERVICE_TOKEN}" \
            -H 'Content-Type: application/json' -d "$body"
        replayed="$(header Idempotent-Replayed)"
        if [ "$STATUS" = 201 ] && [ "$replayed" = true ] && [ "$(json_field entryId)" = "$entry" ]; then
            pass "idempotent retry: Idempotent-Replayed: true, same entryId ${entry}"
        else
            fail "idempotent retry: status $STATUS, Idempotent-Replayed '${replayed}', entryId '$(json_field entryId)' (want ${entry})"
        fi
    elif [ "$STATUS" = 402 ]; then
        fail "POST /api/usage/reconcile: 402 insufficient_credits: user ${USER_ID} has no credit; fund it (complete a test purchase or set FUND_FIRST) and re-run"
        skip "idempotent retry (reconcile did not succeed)"
    else
        fail "POST /api/usage/reconcile: $STATUS $(short "$BODY")"
        skip "idempotent retry (reconcile did not succeed)"
    fi
fi

# --- rate limit (last: it uses up the user's allowance) -----------------------
if [ "${SKIP_RATE_LIMIT:-}" = 1 ]; then
    skip "rate limit (SKIP_RATE_LIMIT=1)"
elif [ -z "$USER_TOKEN" ]; then
    skip "rate limit (USER_TOKEN not set)"
else
    # the limit is per pod and the ingress spreads the requests over them
    n=$((RATE_LIMIT_PODS * (RATE_LIMIT_BURST + 1) + RATE_LIMIT_EXTRA))
    urls=()
    # -o applies to one URL only: give every URL its own
    for _ in $(seq 1 "$n"); do urls+=(-o /dev/null "$BASE_URL/api/balance"); done
    # One curl, one kept-alive connection, n requests back to back.
    # shellcheck disable=SC2086
    codes="$(curl -sS $CURL_OPTS --max-time 60 -H "Authorization: Bearer ${USER_TOKEN}" \
        -w '%{http_code}\n' "${urls[@]}" 2>/dev/null)"
    limited="$(printf '%s\n' "$codes" | grep -c '^429$')"
    ok="$(printf '%s\n' "$codes" | grep -c '^200$')"
    if [ "$limited" -gt 0 ]; then
        pass "rate limit: ${n} requests -> ${ok} x 200, ${limited} x 429"
    else
        fail "rate limit: ${n} requests, no 429 (codes: $(printf '%s' "$codes" | sort | uniq -c | tr '\n' ' '))"
    fi
fi

echo "${PASS} passed, ${FAIL} failed, ${SKIP} skipped"
[ "$FAIL" -eq 0 ]
