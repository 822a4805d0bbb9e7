#!/usr/bin/env bash
# Static checks of the deployment files; run by "./build.sh test".
# Needs: yamllint, shellcheck, promtool (Debian "prometheus"), nginx,
# openssl, python3 with PyYAML (python3-yaml, a dependency of yamllint).
#
#   deployment/check.sh                          # all checks
#   BILLING_MODULE_SO=build/ngx_http_billing_module.so deployment/check.sh
#                                                # + real "nginx -t" with the module
#
# Prints one PASS/FAIL/SKIP line per check, then "N passed, N failed".
# Exits non-zero if any check failed (a missing tool is a failure).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEP="$ROOT/deployment"
BIL="$DEP/billing"
NGINX="${NGINX:-nginx}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
PASSED=0 FAILED=0 SKIPPED=0

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
skip() { echo "SKIP $*"; SKIPPED=$((SKIPPED + 1)); }
fail() {
    echo "FAIL $1"; FAILED=$((FAILED + 1))
    if [ -s "$TMP/out" ]; then sed 's/^/    | /' "$TMP/out" | head -n 40; fi
}

# check NAME CMD...: run CMD with output captured; PASS/FAIL on its status.
check() {
    local name="$1"; shift
    if "$@" >"$TMP/out" 2>&1; then pass "$name"; else fail "$name"; fi
}

need() {
    if command -v "$1" >/dev/null 2>&1; then return 0; fi
    : >"$TMP/out"; fail "$2 ($1 not installed)"; return 1
}

cd "$ROOT" || exit 1

# --- YAML lint ---------------------------------------------------------------
mapfile -t yamls < <(find "$DEP" -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
if need yamllint "yamllint"; then
    for f in "${yamls[@]}"; do
        check "yamllint ${f#"$ROOT"/}" yamllint -s -c "$DEP/.yamllint" "$f"
    done
fi

# --- manifest structure and cross references ----------------------------------
if need python3 "manifest structure" && python3 -c 'import yaml' 2>/dev/null; then
    check "manifests: kinds, names, namespace, cross references" python3 - "$BIL" <<'PY'
import glob, os, re, sys, yaml
d = sys.argv[1]
docs = {}
errors = []
for path in sorted(glob.glob(os.path.join(d, "*.yaml"))):
    if path.endswith("prometheusrule-tests.yaml"):
        continue
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        for key in ("apiVersion", "kind", "metadata"):
            if key not in doc:
                errors.append(f"{path}: missing {key}")
        md = doc.get("metadata", {})
        if md.get("namespace") != "scholarlink-prod":
            errors.append(f"{path}: {doc.get('kind')}/{md.get('name')} not in scholarlink-prod")
        docs[(doc["kind"], md["name"])] = doc

def get(kind, name):
    doc = docs.get((kind, name))
    if doc is None:
        errors.append(f"missing {kind}/{name}")
    return doc or {}

dep = get("Deployment", "scholarlink-billing")
pod = dep.get("spec", {}).get("template", {})
podspec = pod.get("spec", {})
labels = pod.get("metadata", {}).get("labels", {})
c = (podspec.get("containers") or [{}])[0]
sc = c.get("securityContext", {})
psc = podspec.get("securityContext", {})
expect = {
    "replicas 2": dep.get("spec", {}).get("replicas") == 2,
    "selector matches template": all(labels.get(k) == v for k, v in dep.get("spec", {}).get("selector", {}).get("matchLabels", {}).items()),
    "runAsNonRoot": psc.get("runAsNonRoot") is True and (psc.get("runAsUser") or 0) >= 10000,
    "seccomp RuntimeDefault": psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
    "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
    "no privilege escalation": sc.get("allowPrivilegeEscalation") is False,
    "drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
    "limits 500m/512Mi": c.get("resources", {}).get("limits") == {"cpu": "500m", "memory": "512Mi"},
    "probes": all(p in c for p in ("livenessProbe", "readinessProbe", "startupProbe")),
    "liveness /health": c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/health",
    "readiness /readyz": c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
    "preStop nginx -s quit": "nginx -s quit" in " ".join(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])),
    "terminationGracePeriodSeconds": podspec.get("terminationGracePeriodSeconds", 30) >= 45,
    "scrape annotations": pod.get("metadata", {}).get("annotations", {}).get("prometheus.io/scrape") == "true",
    "topology spread": bool(podspec.get("topologySpreadConstraints")),
}
for what, ok in expect.items():
    if not ok:
        errors.append(f"Deployment: {what}")
mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
for m in ("/tmp", "/var/lib/nginx", "/etc/nginx/nginx.conf", "/etc/nginx/tls"):
    if m not in mounts:
        errors.append(f"Deployment: no volume at {m}")
ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

es = get("ExternalSecret", "scholarlink-billing-secrets")
target = es.get("spec", {}).get("target", {}).get("name")
keys = {x["secretKey"]: x["remoteRef"]["key"] for x in es.get("spec", {}).get("data", [])}
want = ["DATABASE_URL", "JWT_PUBLIC_KEY", "JWT_ISSUER", "JWT_AUDIENCE", "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET", "WEBHOOK_SHARED_SECRET"]
if sorted(keys) != sorted(want) or any(keys[k] != f"/prod/scholarlink/billing/{k}" for k in keys):
    errors.append(f"ExternalSecret keys: {keys}")
if es.get("spec", {}).get("secretStoreRef") != {"kind": "ClusterSecretStore", "name": "aws-secrets-manager"}:
    errors.append("ExternalSecret store")
if [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])] != [target]:
    errors.append("Deployment envFrom does not use the ExternalSecret's target")
cms = [v["configMap"]["name"] for v in podspec.get("volumes", []) if "configMap" in v]
for cm in cms:
    get("ConfigMap", cm)

for svc_name, track in (("scholarlink-billing", "stable"), ("scholarlink-billing-canary", "canary")):
    svc = get("Service", svc_name)
    sel = svc.get("spec", {}).get("selector", {})
    if sel.get("track") != track or sel.get("app.kubernetes.io/name") != labels.get("app.kubernetes.io/name"):
        errors.append(f"Service {svc_name} selector {sel}")
    for p in svc.get("spec", {}).get("ports", []):
        if p.get("targetPort") not in ports:
            errors.append(f"Service {svc_name} targetPort {p.get('targetPort')} not a container port")

ing = get("Ingress", "scholarlink-billing")
can = get("Ingress", "scholarlink-billing-canary")
a = can.get("metadata", {}).get("annotations", {})
if "nginx.ingress.kubernetes.io/canary" not in a or "nginx.ingress.kubernetes.io/canary-weight" not in a:
    errors.append("canary Ingress lacks canary annotations")
def backend(i):
    r = i.get("spec", {}).get("rules", [{}])[0]
    return r.get("host"), r.get("http", {}).get("paths", [{}])[0].get("backend", {}).get("service", {}).get("name")
if backend(ing) != ("billing.scholarlink.app", "scholarlink-billing") or backend(can) != ("billing.scholarlink.app", "scholarlink-billing-canary"):
    errors.append(f"Ingress backends {backend(ing)} {backend(can)}")

hpa = get("HorizontalPodAutoscaler", "scholarlink-billing").get("spec", {})
if (hpa.get("minReplicas"), hpa.get("maxReplicas"), hpa.get("scaleTargetRef", {}).get("name")) != (2, 10, "scholarlink-billing") \
        or hpa.get("metrics", [{}])[0].get("resource", {}).get("target", {}).get("averageUtilization") != 60:
    errors.append("HPA is not 2..10 at CPU 60% on scholarlink-billing")

np = get("NetworkPolicy", "scholarlink-billing").get("spec", {})
eports = sorted({p["port"] for e in np.get("egress", []) for p in e.get("ports", [])})
if eports != [53, 443, 5432]:
    errors.append(f"NetworkPolicy egress ports {eports}")
srcs = sorted(f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
              for i in np.get("ingress", []) for f in i.get("from", []))
if srcs != ["ingress-nginx", "monitoring"]:
    errors.append(f"NetworkPolicy ingress sources {srcs}")

job = get("Job", "scholarlink-billing-migrate")
jc = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
if "/opt/billing/sql/migrate.sh" not in " ".join(jc.get("command", [])):
    errors.append("migration Job does not run /opt/billing/sql/migrate.sh")
if jc.get("image") != c.get("image"):
    errors.append("migration Job image differs from the Deployment's")

# every API location of the public server is rate-limited without a token
# too (empty $billing_user_id is skipped by limit_req): billing_anonymous
cm = get("ConfigMap", "scholarlink-billing-nginx").get("data", {}).get("nginx.conf", "")
for loc, body in re.findall(r"location\s+([^{]*?)\s*\{([^{}]*)\}", cm):
    m = re.search(r"\bbilling\s+(packages|balance|ledger|purchases|reconcile|holds)\s*;", body)
    if m and "limit_req zone=billing_anonymous" not in body:
        errors.append(f"ConfigMap: location {loc} (billing {m.group(1)}) has no limit_req zone=billing_anonymous")
if "map $billing_user_id $billing_anonymous" not in cm:
    errors.append("ConfigMap: no map from $billing_user_id to $billing_anonymous")

rule = get("PrometheusRule", "scholarlink-billing")
alerts = {r.get("alert") for g in rule.get("spec", {}).get("groups", []) for r in g.get("rules", [])}
for name in ("BillingHighErrorRate", "BillingHighLatencyP99", "BillingDatabaseConnectionFailures",
             "BillingStripeWebhookFailures", "BillingReconciliationErrors",
             "BillingInvariantCheckStale", "BillingOutboxDeadLetters"):
    if name not in alerts:
        errors.append(f"PrometheusRule lacks {name}")

for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
else
    : >"$TMP/out"; fail "manifest structure (python3 with PyYAML missing: install python3-yaml)"
fi

# --- Prometheus rules ---------------------------------------------------------
if need promtool "promtool check rules" && python3 -c 'import yaml' 2>/dev/null; then
    python3 - "$BIL/prometheusrule.yaml" "$TMP/billing-rules.generated.yaml" <<'PY' >"$TMP/out" 2>&1
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
assert doc["kind"] == "PrometheusRule", doc["kind"]
yaml.safe_dump(doc["spec"], open(sys.argv[2], "w"), sort_keys=False)
PY
    if [ -s "$TMP/billing-rules.generated.yaml" ]; then
        check "promtool check rules (prometheusrule.yaml spec)" promtool check rules "$TMP/billing-rules.generated.yaml"
        cp "$BIL/prometheusrule-tests.yaml" "$TMP/prometheusrule-tests.yaml"
        check "promtool test rules prometheusrule-tests.yaml" \
            sh -c "cd '$TMP' && promtool test rules prometheusrule-tests.yaml"
    else
        fail "extract PrometheusRule spec"
    fi
fi

# --- Grafana dashboard --------------------------------------------------------
# The ConfigMap the Grafana sidecar reads: its JSON, its panels, and every
# PromQL expression, parsed by promtool as the expression of a recording
# rule (Grafana's variables replaced by values first). Metric names are
# checked against the ones the module exports (ngx_http_billing_metrics.c)
# and the PrometheusRule records, which promtool cannot know.
if need promtool "promtool check (grafana-dashboard.yaml)" && python3 -c 'import yaml' 2>/dev/null; then
    check "grafana-dashboard.yaml: sidecar label, JSON, panels, metric names" \
        python3 - "$BIL/grafana-dashboard.yaml" "$BIL/prometheusrule.yaml" \
        "$ROOT/ngx_http_billing_module/ngx_http_billing_metrics.c" "$TMP/dashboard-rules.yaml" <<'PY'
import json, re, sys, yaml
cm_path, rule_path, metrics_c, out = sys.argv[1:5]
errors = []
cm = yaml.safe_load(open(cm_path))
if cm.get("kind") != "ConfigMap":
    errors.append("not a ConfigMap")
if cm.get("metadata", {}).get("labels", {}).get("grafana_dashboard") != "1":
    errors.append('label grafana_dashboard: "1" missing (the sidecar selects on it)')
files = [k for k in cm.get("data", {}) if k.endswith(".json")]
if len(files) != 1:
    errors.append(f"want one .json in data, got {files}")
dash = json.loads(cm["data"][files[0]])
for key in ("uid", "title", "panels", "templating"):
    if key not in dash:
        errors.append(f"dashboard lacks {key}")

known = set(re.findall(r'"(billing_[a-z_]+)', open(metrics_c).read()))
recorded = {r["record"] for g in yaml.safe_load(open(rule_path))["spec"]["groups"]
            for r in g["rules"] if "record" in r}
values = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$track": "stable"}
rules, ids, covered = [], set(), set()
for p in dash["panels"]:
    if p.get("id") in ids:
        errors.append(f"panel id {p.get('id')} twice")
    ids.add(p.get("id"))
    g = p.get("gridPos", {})
    if g.get("x", 0) + g.get("w", 0) > 24:
        errors.append(f"panel {p.get('title')} is wider than the grid")
    if p.get("type") == "row":
        continue
    if not p.get("targets"):
        errors.append(f"panel {p.get('title')} has no query")
    for t in p.get("targets", []):
        expr = t.get("expr", "")
        for var, value in values.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            errors.append(f"panel {p['title']}: unknown variable in {t['expr']}")
        for name in re.findall(r"\b(billing[_:][a-z0-9_:]+)", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in recorded and base not in known:
                errors.append(f"panel {p['title']}: {name} is neither exported nor recorded")
            covered.add(base)
        rules.append({"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": expr})
# what docs/operations.md promises the dashboard shows
for name in ("billing_http_requests_total", "billing_http_request_duration_seconds",
             "billing_credits_purchased_micros_total", "billing_credits_consumed_micros_total",
             "billing_db_pool_connections", "billing_db_pool_waiters",
             "billing_stripe_webhooks_total", "billing_outbox_backlog",
             "billing_invariant_violations"):
    if name not in covered:
        errors.append(f"no panel shows {name}")
yaml.safe_dump({"groups": [{"name": "grafana-dashboard", "rules": rules}]}, open(out, "w"),
               sort_keys=False)
print(f"{len(rules)} expressions in {len(ids)} panels")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
    if [ -s "$TMP/dashboard-rules.yaml" ]; then
        check "promtool check rules (every PromQL expression of grafana-dashboard.yaml)" \
            promtool check rules "$TMP/dashboard-rules.yaml"
    fi
fi

# --- shell scripts ------------------------------------------------------------
if need shellcheck "shellcheck"; then
    mapfile -t scripts < <(
        {
            git -C "$ROOT" ls-files --cached --others --exclude-standard -- '*.sh' 2>/dev/null ||
                find . -name '*.sh' -not -path './.git/*'
            for f in build.sh .ci/run; do [ -f "$f" ] && echo "$f"; done
        } | sed 's|^\./||' | sort -u
    )
    for f in "${scripts[@]}"; do
        [ -f "$f" ] || continue
        # SC1091: a sourced file that does not exist yet (generated at run time).
        check "shellcheck $f" shellcheck -x -e SC1091 "$f"
    done
fi

# --- nginx configuration --------------------------------------------------------
# Writes the ConfigMap's nginx.conf with paths moved into $TMP/nginx.
extract_nginx_conf() {
    mkdir -p "$TMP/nginx"
    python3 - "$BIL/configmap.yaml" "$TMP/nginx/nginx.conf.orig" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "w").write(doc["data"]["nginx.conf"])
PY
    [ -f "$TMP/nginx/tls.crt" ] ||
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=billing.scholarlink.app \
            -keyout "$TMP/nginx/tls.key" -out "$TMP/nginx/tls.crt" >/dev/null 2>&1
}

# An nginx configuration without the module: its directives removed, its
# content handlers replaced by "return 200" (stdin to stdout).
stub_module() {
    # shellcheck disable=SC2016  # literal nginx variables
    sed -E -e '/^[[:space:]]*load_module /d' \
           -e '/^[[:space:]]*billing_[a-z_]+ /d' \
           -e 's/(^|[{;[:space:]])billing [a-z_]+;/\1return 200;/g' \
           -e 's/\$billing_user_id/$remote_addr/g'
}

free_tcp_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# serve_openapi PREFIX CONF PIDFILE URL: nginx started with CONF as one
# process, asked for URL, stopped. Passes when the answer is
# docs/openapi.yaml byte for byte, as application/yaml.
serve_openapi() {
    local prefix=$1 conf=$2 pidfile=$3 url=$4 got="" pid
    "$NGINX" -q -e stderr -p "$prefix/" -c "$conf" -g 'master_process off;' || return 1
    got=$(curl -sk --max-time 10 -o "$prefix/openapi.yaml.got" -w '%{http_code} %{content_type}' "$url")
    if pid=$(cat "$pidfile" 2>/dev/null) && kill -QUIT "$pid"; then
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
    fi
    echo "GET $url: $got"
    [ "$got" = "200 application/yaml" ] || return 1
    cmp "$prefix/openapi.yaml.got" "$ROOT/docs/openapi.yaml"
}

if need "$NGINX" "nginx -t" && need openssl "nginx -t"; then
    if extract_nginx_conf >"$TMP/out" 2>&1; then
        # (a) Structure without the module: billing directives removed,
        #     content handlers replaced by "return 200". Checks TLS, headers,
        #     log format, listeners, paths on every machine.
        sed -E -e "s#/tmp/#$TMP/nginx/#" \
               -e "s#/etc/nginx/tls/#$TMP/nginx/#" \
               "$TMP/nginx/nginx.conf.orig" | stub_module >"$TMP/nginx/stub.conf"
        check "nginx -t (configmap nginx.conf, module directives stubbed)" \
            "$NGINX" -t -q -e stderr -p "$TMP/nginx/" -c "$TMP/nginx/stub.conf"

        # (b) The real thing, with the built module and dummy secrets.
        if [ -z "${BILLING_MODULE_SO:-}" ]; then
            echo "SKIP nginx -t with the billing module (BILLING_MODULE_SO not set)"; SKIPPED=$((SKIPPED + 1))
        elif [ ! -f "$BILLING_MODULE_SO" ]; then
            : >"$TMP/out"; fail "nginx -t with the billing module ($BILLING_MODULE_SO not found)"
        else
            so="$(cd "$(dirname "$BILLING_MODULE_SO")" && pwd)/$(basename "$BILLING_MODULE_SO")"
            # paths first: the module itself may live under /tmp
            sed -E -e "s#/tmp/#$TMP/nginx/#" \
                   -e "s#/etc/nginx/tls/#$TMP/nginx/#" \
                   -e "s#^load_module .*#load_module $so;#" \
                   "$TMP/nginx/nginx.conf.orig" >"$TMP/nginx/prod.conf"
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/nginx/jwt.key" >/dev/null 2>&1
            openssl pkey -in "$TMP/nginx/jwt.key" -pubout -out "$TMP/nginx/jwt.pub" >/dev/null 2>&1
            check "nginx -t (configmap nginx.conf with $(basename "$so"))" env \
                DATABASE_URL='postgresql://billing_user:dummy@127.0.0.1:1/billing?sslmode=disable&connection_limit=10' \
                JWT_PUBLIC_KEY="$(cat "$TMP/nginx/jwt.pub")" \
                JWT_ISSUER=https://student-pilot.replit.app \
                JWT_AUDIENCE=https://billing.scholarlink.app \
                STRIPE_SECRET_KEY=sk_test_dummy \
                STRIPE_WEBHOOK_SECRET=whsec_dummy \
                WEBHOOK_SHARED_SECRET=dummy-shared-secret \
                "$NGINX" -t -q -e stderr -p "$TMP/nginx/" -c "$TMP/nginx/prod.conf"
        fi

        # (c) GET /api/openapi.yaml as the ConfigMap serves it (the image
        #     carries the file at the alias' path: Dockerfile check below).
        if need curl "configmap serves /api/openapi.yaml"; then
            api_port=$(free_tcp_port)
            sed -E -e "s#^([[:space:]]*listen) 8080 #\1 127.0.0.1:$(free_tcp_port) #" \
                   -e "s#^([[:space:]]*listen) 8443 #\1 127.0.0.1:$api_port #" \
                   -e "s#alias /opt/billing/openapi.yaml;#alias $ROOT/docs/openapi.yaml;#" \
                   "$TMP/nginx/stub.conf" >"$TMP/nginx/serve.conf"
            check "configmap nginx.conf serves docs/openapi.yaml at /api/openapi.yaml" \
                serve_openapi "$TMP/nginx" "$TMP/nginx/serve.conf" "$TMP/nginx/nginx.pid" \
                "https://127.0.0.1:$api_port/api/openapi.yaml"
        fi
    else
        fail "extract nginx.conf from configmap.yaml"
    fi
fi

# (d) The same for conf/billing.dev.conf.in, rendered by conf/run.sh's own
#     run_render (in a directory of this check, as t/090-dev-flow.t does).
render_dev_conf() {
    (
        # shellcheck disable=SC2034  # read by conf/run.sh
        BUILD_DIR=$ROOT/build MODULE_NAME=ngx_http_billing_module \
            BILLING_RUN_DIR=$1 BILLING_PORT=$2 BILLING_RATE_LIMIT_PER_MINUTE=100 \
            BILLING_SERVICE_RATE_LIMIT_PER_MINUTE=6000 STRIPE_API_BASE=http://127.0.0.1:1 \
            BILLING_NOTIFY_URL=http://127.0.0.1:1/hooks BILLING_CORS_ORIGINS=https://example.test
        # shellcheck source=conf/run.sh
        . "$ROOT/conf/run.sh"
        run_render
    )
}
if need "$NGINX" "dev config serves /api/openapi.yaml" && need curl "dev config serves /api/openapi.yaml"; then
    dev="$TMP/dev"
    mkdir -p "$dev"
    dev_port=$(free_tcp_port)
    if render_dev_conf "$dev" "$dev_port" >"$TMP/out" 2>&1; then
        stub_module <"$dev/nginx.conf" >"$dev/stub.conf"
        check "conf/billing.dev.conf.in serves docs/openapi.yaml at /api/openapi.yaml" \
            serve_openapi "$dev" "$dev/stub.conf" "$dev/nginx.pid" \
            "http://127.0.0.1:$dev_port/api/openapi.yaml"
    else
        fail "render conf/billing.dev.conf.in with conf/run.sh's run_render"
    fi
fi

# --- deploy.sh behaviour with a fake kubectl -------------------------------------
check "deploy.sh canary progression / abort / rollback (deployment/test-deploy.sh)" \
    bash "$DEP/test-deploy.sh"

# --- Dockerfile essentials ---------------------------------------------------------
check "Dockerfile: bookworm-slim stages, non-root, module + sql + openapi.yaml installed" sh -c "
    f='$ROOT/Dockerfile'
    grep -q '^FROM debian:bookworm-slim AS build' \"\$f\" &&
    grep -q '^FROM debian:bookworm-slim AS runtime' \"\$f\" &&
    grep -q '^USER 10001' \"\$f\" &&
    grep -q 'ngx_http_billing_module.so /usr/lib/nginx/modules/' \"\$f\" &&
    grep -q '/opt/billing/sql' \"\$f\" &&
    grep -q '^COPY docs/openapi.yaml /opt/billing/openapi.yaml' \"\$f\" &&
    grep -q '^EXPOSE 8080 8443' \"\$f\"
"

echo "${PASSED} passed, ${FAILED} failed${SKIPPED:+, ${SKIPPED} skipped}"
[ "$FAILED" -eq 0 ]
