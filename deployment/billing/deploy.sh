#!/usr/bin/env bash
# Deploy the ScholarLink billing service, with an optional canary.
#
#   IMAGE=ghcr.io/scholarlink/billing:1.4.0 NAMESPACE=scholarlink-prod \
#     ENABLE_CANARY=true ./deployment/billing/deploy.sh            # deploy
#   ./deployment/billing/deploy.sh rollback                        # emergency rollback
#   ./deployment/billing/deploy.sh status
#   ./deployment/billing/deploy.sh set-weight 20                   # manual canary step
#   ./deployment/billing/deploy.sh promote | abort                 # manual canary end
#
# Environment:
#   NAMESPACE         target namespace (default scholarlink-prod)
#   IMAGE             image to deploy (required for deploy and promote)
#   ENABLE_CANARY     true: canary 1 -> 5 -> 20 -> 50 -> 100 % then promote;
#                     false: plain rolling update (default true)
#   CANARY_STEPS      weights, space separated (default "1 5 20 50 100")
#   FIRST_STEP_WAIT   seconds to observe the first step (default STEP_WAIT if
#                     set, else 1800 = the checklist's 30 minutes)
#   STEP_WAIT         seconds to observe each later step (default 600)
#   GATE_INTERVAL     seconds between gate checks during a wait (default 60)
#   PROM_URL          Prometheus base URL; when set the gate also requires
#                     canary error ratio < MAX_ERROR_RATIO (0.001) and
#                     p99 < MAX_P99_SECONDS (0.5) over GATE_WINDOW (5m)
#   PROM_CANARY_MATCHER  label matcher selecting canary series
#                     (default track="canary", set by podmonitor.yaml)
#   REQUIRE_CANARY_TRAFFIC  true: "no canary traffic yet" fails the gate
#                     (default false: it passes with a warning)
#   MIGRATION_TIMEOUT seconds for the migration Job (default 300)
#   ROLLOUT_TIMEOUT   seconds for each rollout (default 600)
#   SKIP_MIGRATION    true: do not run the migration Job
#   APPLY_MONITORING  false: skip PodMonitor, PrometheusRule (no operator CRDs) and
#                     the Grafana dashboard
#   APPLY_CERTIFICATE false: skip the cert-manager Certificate (Secret made by hand)
#   KUBECTL, CURL     commands to use (tests substitute fakes)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MANIFESTS="${MANIFESTS:-$SCRIPT_DIR}"

NAMESPACE="${NAMESPACE:-scholarlink-prod}"
IMAGE="${IMAGE:-}"
ENABLE_CANARY="${ENABLE_CANARY:-true}"
CANARY_STEPS="${CANARY_STEPS:-1 5 20 50 100}"
FIRST_STEP_WAIT="${FIRST_STEP_WAIT:-${STEP_WAIT:-1800}}"
STEP_WAIT="${STEP_WAIT:-600}"
GATE_INTERVAL="${GATE_INTERVAL:-60}"
PROM_URL="${PROM_URL:-}"
PROM_CANARY_MATCHER="${PROM_CANARY_MATCHER:-track=\"canary\"}"
MAX_ERROR_RATIO="${MAX_ERROR_RATIO:-0.001}"
MAX_P99_SECONDS="${MAX_P99_SECONDS:-0.5}"
GATE_WINDOW="${GATE_WINDOW:-5m}"
REQUIRE_CANARY_TRAFFIC="${REQUIRE_CANARY_TRAFFIC:-false}"
MIGRATION_TIMEOUT="${MIGRATION_TIMEOUT:-300}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-600}"
SKIP_MIGRATION="${SKIP_MIGRATION:-false}"
APPLY_MONITORING="${APPLY_MONITORING:-true}"
APPLY_CERTIFICATE="${APPLY_CERTIFICATE:-true}"
KUBECTL="${KUBECTL:-kubectl}"
CURL="${CURL:-curl}"

APP=scholarlink-billing
CANARY="${APP}-canary"
CANARY_INGRESS="${APP}-canary"
MIGRATE_JOB="${APP}-migrate"
ANN=nginx.ingress.kubernetes.io

log() { printf '%s deploy: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# kubectl wrapper: every call in the target namespace. KUBECTL may hold
# extra words (e.g. "kubectl --context prod"), hence no quotes.
k() {
    # shellcheck disable=SC2086
    $KUBECTL -n "$NAMESPACE" "$@"
}

# Render a manifest for NAMESPACE (the files name scholarlink-prod).
render() {
    sed -e "s/scholarlink-prod/${NAMESPACE}/g" "$MANIFESTS/$1"
}

apply_file() {
    log "apply $1"
    render "$1" | k apply -f -
}

# Current .spec.replicas of a Deployment, or empty if it does not exist.
replicas_of() {
    k get deployment "$1" -o 'jsonpath={.spec.replicas}' 2>/dev/null || true
}

exists() {
    k get "$1" "$2" -o name >/dev/null 2>&1
}

# Deployment manifest with image, replicas and (for the canary) name/track
# rewritten. $1 = stable|canary, $2 = replicas.
render_deployment() {
    local track="$1" replicas="$2"
    local name_expr='' track_expr=''
    if [ "$track" = canary ]; then
        name_expr="s/^  name: ${APP}\$/  name: ${CANARY}/"
        track_expr='s/track: stable$/track: canary/'
    fi
    render deployment.yaml | sed \
        -e "s|^\\(          image: \\).*|\\1${IMAGE}|" \
        -e "s/^  replicas: [0-9]*\$/  replicas: ${replicas}/" \
        ${name_expr:+-e "$name_expr"} \
        ${track_expr:+-e "$track_expr"}
}

rollout_wait() {
    log "waiting for deployment/$1 rollout"
    k rollout status "deployment/$1" --timeout="${ROLLOUT_TIMEOUT}s"
}

set_canary_weight() {
    local weight="$1" enabled=true
    [ "$weight" -gt 0 ] || enabled=false
    log "canary ingress: canary=${enabled} weight=${weight}"
    k patch ingress "$CANARY_INGRESS" --type=merge -p \
        "{\"metadata\":{\"annotations\":{\"${ANN}/canary\":\"${enabled}\",\"${ANN}/canary-weight\":\"${weight}\"}}}"
}

scale_canary() {
    log "scale deployment/${CANARY} to $1"
    k scale "deployment/${CANARY}" --replicas="$1"
}

# ---------------------------------------------------------------------------
# Gate

# Instant query; prints the first sample's value, or nothing for no data.
prom_query() {
    local out
    out="$($CURL -fsS --max-time 20 --get --data-urlencode "query=$1" \
        "${PROM_URL%/}/api/v1/query")" || return 1
    printf '%s' "$out" | grep -q '"status":"success"' || return 1
    printf '%s' "$out" | sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p' | head -n1
}

# $1 value, $2 limit: true when value < limit (value NaN/Inf = false).
below() {
    awk -v v="$1" -v m="$2" 'BEGIN { if (v ~ /^[-+]?[0-9.]+([eE][-+]?[0-9]+)?$/ && v + 0 < m + 0) exit 0; exit 1 }'
}

gate_check() {
    local want ready
    want="$(k get deployment "$CANARY" -o 'jsonpath={.spec.replicas}')" || return 1
    ready="$(k get deployment "$CANARY" -o 'jsonpath={.status.readyReplicas}')" || return 1
    if [ "${ready:-0}" -lt "${want:-1}" ]; then
        log "gate FAIL: canary ready ${ready:-0}/${want}"
        return 1
    fi
    log "gate ok: canary ready ${ready}/${want}"
    [ -n "$PROM_URL" ] || return 0

    local sel="${PROM_CANARY_MATCHER},endpoint!~\"health|readyz|metrics\""
    local total err_ratio p99
    total="$(prom_query "sum(rate(billing_http_requests_total{${sel}}[${GATE_WINDOW}]))")" ||
        { log "gate FAIL: Prometheus query failed"; return 1; }
    if [ -z "$total" ] || ! below 0 "$total"; then
        if [ "$REQUIRE_CANARY_TRAFFIC" = true ]; then
            log "gate FAIL: no canary traffic in ${GATE_WINDOW}"
            return 1
        fi
        log "gate WARN: no canary traffic in ${GATE_WINDOW} yet; nothing to judge"
        return 0
    fi
    err_ratio="$(prom_query "(sum(rate(billing_http_requests_total{${sel},status=~\"5..\"}[${GATE_WINDOW}])) or vector(0)) / sum(rate(billing_http_requests_total{${sel}}[${GATE_WINDOW}]))")" ||
        { log "gate FAIL: Prometheus query failed"; return 1; }
    p99="$(prom_query "histogram_quantile(0.99, sum by (le) (rate(billing_http_request_duration_seconds_bucket{${sel}}[${GATE_WINDOW}])))")" ||
        { log "gate FAIL: Prometheus query failed"; return 1; }
    if ! below "${err_ratio:-NaN}" "$MAX_ERROR_RATIO"; then
        log "gate FAIL: canary error ratio ${err_ratio:-none} >= ${MAX_ERROR_RATIO}"
        return 1
    fi
    if [ -n "$p99" ] && [ "$p99" != NaN ] && ! below "$p99" "$MAX_P99_SECONDS"; then
        log "gate FAIL: canary p99 ${p99}s >= ${MAX_P99_SECONDS}s"
        return 1
    fi
    log "gate ok: canary error ratio ${err_ratio}, p99 ${p99:-n/a}s"
}

# Observe for $1 seconds, checking every GATE_INTERVAL; fail fast.
gate() {
    local duration="$1" elapsed=0 step
    gate_check || return 1
    while [ "$elapsed" -lt "$duration" ]; do
        step="$GATE_INTERVAL"
        [ $((elapsed + step)) -le "$duration" ] || step=$((duration - elapsed))
        sleep "$step"
        elapsed=$((elapsed + step))
        gate_check || return 1
    done
}

# ---------------------------------------------------------------------------
# Steps

apply_infrastructure() {
    apply_file external-secret.yaml
    log "waiting for the ExternalSecret to sync"
    k wait --for=condition=Ready "externalsecret/${APP}-secrets" --timeout=60s
    apply_file configmap.yaml
    [ "$APPLY_CERTIFICATE" != true ] || apply_file certificate.yaml
    apply_file service.yaml
    apply_file networkpolicy.yaml
    apply_file pdb.yaml
    apply_file hpa.yaml
    apply_file ingress.yaml
    # Only create the canary Ingress; re-applying would reset a running
    # canary's weight (set-weight/abort handle it afterwards).
    if ! exists ingress "$CANARY_INGRESS"; then
        apply_file ingress-canary.yaml
    fi
    if [ "$APPLY_MONITORING" = true ]; then
        apply_file podmonitor.yaml
        apply_file prometheusrule.yaml
        apply_file grafana-dashboard.yaml
    fi
}

run_migration() {
    if [ "$SKIP_MIGRATION" = true ]; then
        log "migration skipped (SKIP_MIGRATION=true)"
        return 0
    fi
    log "running database migration job with ${IMAGE}"
    k delete job "$MIGRATE_JOB" --ignore-not-found=true --wait=true
    render migration-job.yaml |
        sed -e "s|^\\(          image: \\).*|\\1${IMAGE}|" |
        k apply -f -
    if ! k wait --for=condition=complete "job/${MIGRATE_JOB}" --timeout="${MIGRATION_TIMEOUT}s"; then
        k logs "job/${MIGRATE_JOB}" --tail=100 || true
        die "migration failed; application not changed"
    fi
    log "migration complete"
}

deploy_stable() {
    local replicas
    replicas="$(replicas_of "$APP")"
    log "deploy stable ${IMAGE} (replicas ${replicas:-2})"
    render_deployment stable "${replicas:-2}" | k apply -f -
    if ! rollout_wait "$APP"; then
        log "stable rollout failed: rolling back"
        k rollout undo "deployment/${APP}"
        rollout_wait "$APP" || true
        die "deployment failed and was rolled back"
    fi
}

# Take the canary out of traffic and scale it away. The stable Deployment
# was not touched during the canary phases, so it needs no undo.
abort_canary() {
    log "ABORT canary: all traffic back to stable"
    set_canary_weight 0
    scale_canary 0
}

promote() {
    [ -n "$IMAGE" ] || die "IMAGE is required"
    # Stable gets the new image while the canary still holds the traffic;
    # only then is the canary Ingress switched off. (Disabling the canary
    # first would send 100% back to the old version.)
    log "promote ${IMAGE} to stable"
    deploy_stable
    set_canary_weight 0
    scale_canary 0
    log "promotion complete"
}

deploy_canary() {
    local stable_replicas weight replicas wait_s first=true
    stable_replicas="$(replicas_of "$APP")"
    stable_replicas="${stable_replicas:-2}"
    log "canary ${IMAGE}; stable has ${stable_replicas} replicas; steps: ${CANARY_STEPS}"
    render_deployment canary 1 | k apply -f -
    if ! rollout_wait "$CANARY"; then
        abort_canary
        die "canary did not become ready"
    fi
    for weight in $CANARY_STEPS; do
        # Canary capacity follows its share of traffic (at least one pod).
        replicas=$(( (stable_replicas * weight + 99) / 100 ))
        [ "$replicas" -ge 1 ] || replicas=1
        scale_canary "$replicas"
        if ! rollout_wait "$CANARY"; then
            abort_canary
            die "canary could not scale to ${replicas}"
        fi
        set_canary_weight "$weight"
        if [ "$first" = true ]; then wait_s="$FIRST_STEP_WAIT"; first=false; else wait_s="$STEP_WAIT"; fi
        log "phase ${weight}%: observing for ${wait_s}s"
        if ! gate "$wait_s"; then
            abort_canary
            die "canary failed its gate at ${weight}%; aborted (stable unchanged)"
        fi
    done
    promote
}

do_deploy() {
    [ -n "$IMAGE" ] || die "IMAGE is required (e.g. IMAGE=ghcr.io/scholarlink/billing:1.4.0)"
    log "namespace ${NAMESPACE}, image ${IMAGE}, canary ${ENABLE_CANARY}"
    apply_infrastructure
    run_migration
    if [ "$ENABLE_CANARY" = true ] && exists deployment "$APP"; then
        deploy_canary
    else
        [ "$ENABLE_CANARY" != true ] || log "no stable deployment yet: first install is a plain rollout"
        deploy_stable
    fi
    log "deploy finished"
}

do_rollback() {
    log "ROLLBACK: canary off, canary scaled to 0, stable rolled back one revision"
    if exists ingress "$CANARY_INGRESS"; then set_canary_weight 0; fi
    if exists deployment "$CANARY"; then scale_canary 0; fi
    k rollout undo "deployment/${APP}" ${ROLLBACK_TO_REVISION:+--to-revision="$ROLLBACK_TO_REVISION"}
    rollout_wait "$APP"
    log "rollback finished. Database: see README.md 'Rollback' for the snapshot restore."
}

do_status() {
    k get deployment "$APP" "$CANARY" -o wide || true
    k get pods -l app.kubernetes.io/name=scholarlink-billing -o wide || true
    k get ingress "$APP" "$CANARY_INGRESS" \
        -o 'custom-columns=NAME:.metadata.name,CANARY:.metadata.annotations.nginx\.ingress\.kubernetes\.io/canary,WEIGHT:.metadata.annotations.nginx\.ingress\.kubernetes\.io/canary-weight' || true
    k get hpa "$APP" || true
    k get job "$MIGRATE_JOB" || true
    k rollout history "deployment/${APP}" || true
}

main() {
    local cmd="${1:-deploy}"
    case "$cmd" in
        deploy) do_deploy ;;
        rollback) do_rollback ;;
        status) do_status ;;
        set-weight)
            case "${2:-}" in
                [0-9]|[1-9][0-9]|100) set_canary_weight "$2" ;;
                *) die "usage: deploy.sh set-weight 0..100" ;;
            esac ;;
        promote) promote ;;
        abort) abort_canary ;;
        -h|--help|help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
        *) die "unknown command '$cmd' (deploy|rollback|status|set-weight N|promote|abort)" ;;
    esac
}

main "$@"
