#!/usr/bin/env bash
# Exercises deployment/billing/deploy.sh against a fake kubectl (and a fake
# curl standing in for Prometheus) that record what they are asked to do.
# Run by deployment/check.sh; prints PASS/FAIL per scenario, exits non-zero
# on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEPLOY="$HERE/billing/deploy.sh"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0

# --- fakes -------------------------------------------------------------------
mkdir -p "$WORK/bin"
cat >"$WORK/bin/kubectl" <<'FAKE'
#!/usr/bin/env bash
# Fake kubectl: appends "kubectl <args>" to $FAKE_LOG, keeps a little state.
set -u
state="$FAKE_STATE"
echo "kubectl $*" >>"$FAKE_LOG"
args=" $* "
if [[ "$args" == *" apply -f - "* ]]; then
    n=$(( $(cat "$state/applies" 2>/dev/null || echo 0) + 1 ))
    echo "$n" >"$state/applies"
    cat >"$state/apply-$n.yaml"
    kind=$(sed -n 's/^kind: //p' "$state/apply-$n.yaml" | head -n1)
    name=$(sed -n 's/^  name: //p' "$state/apply-$n.yaml" | head -n1)
    image=$(sed -n 's/^ *image: //p' "$state/apply-$n.yaml" | head -n1)
    echo "  applied $kind/$name${image:+ image=$image}" >>"$FAKE_LOG"
    exit 0
fi
if [[ "$args" == *" -o name "* ]]; then
    for missing in ${FAKE_MISSING:-}; do
        [[ "$args" == *" $missing "* ]] && exit 1
    done
    exit 0
fi
if [[ "$args" == *" patch ingress "* ]]; then
    w=$(printf '%s' "$*" | sed -n 's/.*canary-weight":"\([0-9]*\).*/\1/p')
    echo "${w:-?}" >"$state/weight"
    exit 0
fi
if [[ "$args" == *" scale deployment/scholarlink-billing-canary "* ]]; then
    printf '%s' "$*" | sed -n 's/.*--replicas=\([0-9]*\).*/\1/p' >"$state/canary-replicas"
    exit 0
fi
if [[ "$args" == *" get deployment scholarlink-billing -o jsonpath={.spec.replicas} "* ]]; then
    echo "${FAKE_STABLE_REPLICAS:-4}"; exit 0
fi
if [[ "$args" == *" get deployment scholarlink-billing-canary -o jsonpath={.spec.replicas} "* ]]; then
    cat "$state/canary-replicas" 2>/dev/null || echo 1; exit 0
fi
if [[ "$args" == *" get deployment scholarlink-billing-canary -o jsonpath={.status.readyReplicas} "* ]]; then
    if [ -n "${FAKE_CANARY_UNREADY:-}" ]; then echo 0; else cat "$state/canary-replicas" 2>/dev/null || echo 1; fi
    exit 0
fi
if [[ "$args" == *" wait --for=condition=complete "* ]] && [ -n "${FAKE_MIGRATION_FAILS:-}" ]; then
    exit 1
fi
exit 0
FAKE

cat >"$WORK/bin/curl" <<'FAKE'
#!/usr/bin/env bash
# Fake Prometheus: canary error ratio FAKE_ERROR_RATIO once the canary
# weight reaches FAKE_BAD_FROM_WEIGHT (default: never), else healthy.
set -u
q="$*"
weight=$(cat "$FAKE_STATE/weight" 2>/dev/null || echo 0)
echo "curl query at weight $weight" >>"$FAKE_LOG"
if [[ "$q" == *histogram_quantile* ]]; then v=0.120
elif [[ "$q" == *'status=~'* ]]; then
    v=0.0002
    if [ -n "${FAKE_BAD_FROM_WEIGHT:-}" ] && [ "$weight" -ge "$FAKE_BAD_FROM_WEIGHT" ]; then v="${FAKE_ERROR_RATIO:-0.05}"; fi
else v=12.5
fi
printf '{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.123,"%s"]}]}}\n' "$v"
FAKE
chmod +x "$WORK/bin/kubectl" "$WORK/bin/curl"

# --- helpers -----------------------------------------------------------------
run_deploy() { # $1 scenario name, rest: args to deploy.sh; env from caller
    local name="$1"; shift
    export FAKE_LOG="$WORK/$name.log" FAKE_STATE="$WORK/$name.state"
    mkdir -p "$FAKE_STATE"; : >"$FAKE_LOG"
    set +e
    KUBECTL="$WORK/bin/kubectl" CURL="$WORK/bin/curl" STEP_WAIT=0 GATE_INTERVAL=0 \
        ROLLOUT_TIMEOUT=5 "$DEPLOY" "$@" >"$WORK/$name.out" 2>&1
    RC=$?
    set -e
}

# Patterns (grep -E) must appear in the log in this order.
in_order() { # $1 log, rest patterns
    local log="$1" line=0 n pat; shift
    for pat in "$@"; do
        n=$(tail -n +"$((line + 1))" "$log" | grep -n -E -m1 -- "$pat" | cut -d: -f1) || true
        if [ -z "$n" ]; then
            echo "    missing (in order): $pat"
            return 1
        fi
        line=$((line + n))
    done
}

absent() { # $1 log, $2 pattern
    if grep -q -E -- "$2" "$1"; then echo "    unexpected: $2"; return 1; fi
}

result() { # $1 name, $2 ok(0)/fail
    if [ "$2" -eq 0 ]; then
        echo "PASS deploy.sh: $1"; PASSED=$((PASSED + 1))
    else
        echo "FAIL deploy.sh: $1"; FAILED=$((FAILED + 1))
        sed 's/^/    | /' "$WORK/$1.out" | tail -n 15
    fi
}

W='canary-weight":"'   # prefix of a weight in a recorded patch

# --- scenarios ---------------------------------------------------------------

# 1. Canary happy path: infra, migration, canary 1 -> 5 -> 20 -> 50 -> 100,
#    promote (stable image first, then canary off, then canary scaled to 0).
s=canary-progression
IMAGE=registry.example/billing:2.0.0 ENABLE_CANARY=true PROM_URL=http://prom.example run_deploy "$s"
ok=0
[ "$RC" -eq 0 ] || { echo "    exit $RC"; ok=1; }
in_order "$WORK/$s.log" \
    'apply -f -' 'applied ExternalSecret/scholarlink-billing-secrets' \
    'wait --for=condition=Ready externalsecret/scholarlink-billing-secrets' \
    'applied ConfigMap/scholarlink-billing-nginx' \
    'delete job scholarlink-billing-migrate' \
    'applied Job/scholarlink-billing-migrate image=registry.example/billing:2.0.0' \
    'wait --for=condition=complete job/scholarlink-billing-migrate' \
    'applied Deployment/scholarlink-billing-canary image=registry.example/billing:2.0.0' \
    "scale deployment/scholarlink-billing-canary --replicas=1" "${W}1\"" 'curl query at weight 1' \
    "scale deployment/scholarlink-billing-canary --replicas=1" "${W}5\"" 'curl query at weight 5' \
    "scale deployment/scholarlink-billing-canary --replicas=1" "${W}20\"" 'curl query at weight 20' \
    "scale deployment/scholarlink-billing-canary --replicas=2" "${W}50\"" 'curl query at weight 50' \
    "scale deployment/scholarlink-billing-canary --replicas=4" "${W}100\"" 'curl query at weight 100' \
    'applied Deployment/scholarlink-billing image=registry.example/billing:2.0.0' \
    'rollout status deployment/scholarlink-billing --timeout' \
    '/canary":"false",.*'"${W}0\"" \
    'scale deployment/scholarlink-billing-canary --replicas=0' || ok=1
absent "$WORK/$s.log" 'rollout undo' || ok=1
grep -q '^    track: canary$' "$WORK/$s.state/apply-$(grep -l '^  name: scholarlink-billing-canary$' "$WORK/$s.state"/apply-*.yaml | head -n1 | sed 's/.*apply-\([0-9]*\).yaml/\1/').yaml" ||
    { echo "    canary manifest lacks track: canary"; ok=1; }
result "$s" "$ok"

# 2. Gate failure at 20%: canary aborted (weight 0, scaled to 0), stable
#    untouched, non-zero exit.
s=canary-gate-abort
IMAGE=registry.example/billing:2.0.0 ENABLE_CANARY=true PROM_URL=http://prom.example \
    FAKE_BAD_FROM_WEIGHT=20 run_deploy "$s"
ok=0
[ "$RC" -ne 0 ] || { echo "    expected non-zero exit"; ok=1; }
in_order "$WORK/$s.log" "${W}1\"" "${W}5\"" "${W}20\"" 'curl query at weight 20' \
    "${W}0\"" 'scale deployment/scholarlink-billing-canary --replicas=0' || ok=1
absent "$WORK/$s.log" "${W}50" || ok=1
absent "$WORK/$s.log" 'applied Deployment/scholarlink-billing image' || ok=1
absent "$WORK/$s.log" 'rollout undo' || ok=1
grep -q 'canary error ratio 0.05 >= 0.001' "$WORK/$s.out" || { echo "    no gate reason printed"; ok=1; }
result "$s" "$ok"

# 3. Canary pods not Ready: abort at the first gate.
s=canary-unready-abort
IMAGE=registry.example/billing:2.0.0 ENABLE_CANARY=true FAKE_CANARY_UNREADY=1 run_deploy "$s"
ok=0
[ "$RC" -ne 0 ] || { echo "    expected non-zero exit"; ok=1; }
in_order "$WORK/$s.log" "${W}1\"" "${W}0\"" 'scale deployment/scholarlink-billing-canary --replicas=0' || ok=1
absent "$WORK/$s.log" "${W}5\"" || ok=1
result "$s" "$ok"

# 4. Rollback: canary off, canary scaled to 0, stable rolled back, in order.
s=rollback
run_deploy "$s" rollback
ok=0
[ "$RC" -eq 0 ] || { echo "    exit $RC"; ok=1; }
in_order "$WORK/$s.log" \
    '/canary":"false",.*'"${W}0\"" \
    'scale deployment/scholarlink-billing-canary --replicas=0' \
    'rollout undo deployment/scholarlink-billing' \
    'rollout status deployment/scholarlink-billing ' || ok=1
grep -q -- '-n scholarlink-prod rollout undo' "$WORK/$s.log" || { echo "    not in scholarlink-prod"; ok=1; }
result "$s" "$ok"

# 5. Plain rollout (ENABLE_CANARY=false) in another namespace.
s=plain-rollout
IMAGE=registry.example/billing:2.0.1 ENABLE_CANARY=false NAMESPACE=scholarlink-staging run_deploy "$s"
ok=0
[ "$RC" -eq 0 ] || { echo "    exit $RC"; ok=1; }
in_order "$WORK/$s.log" 'wait --for=condition=complete job/scholarlink-billing-migrate' \
    'applied Deployment/scholarlink-billing image=registry.example/billing:2.0.1' \
    'rollout status deployment/scholarlink-billing ' || ok=1
absent "$WORK/$s.log" 'patch ingress' || ok=1
absent "$WORK/$s.log" '-n scholarlink-prod ' || ok=1
grep -q '^  namespace: scholarlink-staging$' "$WORK/$s.state/apply-1.yaml" || { echo "    namespace not rendered"; ok=1; }
if grep -l 'kind: Deployment' "$WORK/$s.state"/apply-*.yaml | xargs grep -q '^  replicas: 4$'; then :; else
    echo "    stable replicas not preserved (HPA-managed count)"; ok=1
fi
result "$s" "$ok"

# 6. Migration failure: nothing deployed, non-zero exit.
s=migration-failure
IMAGE=registry.example/billing:2.0.0 ENABLE_CANARY=true FAKE_MIGRATION_FAILS=1 run_deploy "$s"
ok=0
[ "$RC" -ne 0 ] || { echo "    expected non-zero exit"; ok=1; }
absent "$WORK/$s.log" 'applied Deployment' || ok=1
absent "$WORK/$s.log" 'patch ingress' || ok=1
result "$s" "$ok"

# 7. No IMAGE: refuses to deploy.
s=no-image
IMAGE='' run_deploy "$s"
ok=0
[ "$RC" -ne 0 ] || { echo "    expected non-zero exit"; ok=1; }
absent "$WORK/$s.log" 'apply' || ok=1
result "$s" "$ok"

echo "deploy.sh tests: ${PASSED} passed, ${FAILED} failed"
[ "$FAILED" -eq 0 ]
