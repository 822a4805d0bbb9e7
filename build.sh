#!/usr/bin/env bash
# ScholarLink Billing: one entry point for newcomers, CI and operators.
#
#   ./build.sh deps     install what is missing (Debian packages)
#   ./build.sh build    build the dynamic module with Debian's own recipe
#   ./build.sh run      deps + build + local PostgreSQL + nginx on 127.0.0.1
#   ./build.sh stop     stop what "run" started
#   ./build.sh fund U [PACKAGE]  local: a purchase for user U, paid on the Stripe stand-in
#   ./build.sh refund ID [CENTS] local: refund a paid purchase on the Stripe stand-in
#   ./build.sh test     deps + build + the whole test suite
#   ./build.sh fuzz     longer fuzzing of the pure core (FUZZ_SECONDS, default 300)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD_DIR="$ROOT/build"
NGINX_SRC=/usr/share/nginx/src
NGINX_BIN=/usr/sbin/nginx
MODULE_NAME=ngx_http_billing_module

DEB_PACKAGES=(
    nginx nginx-dev build-essential
    libpq-dev libcjson-dev libssl-dev libcurl4-openssl-dev
    postgresql postgresql-client openssl curl ca-certificates
    libtest-base-perl libcrypt-jwt-perl libjson-pp-perl libwww-perl libnet-dns-perl
    prometheus yamllint shellcheck python3-yaml
    clang libclang-rt-14-dev valgrind
    libjson-validator-perl
)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

cmd_deps() {
    local missing=() pkg
    for pkg in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$pkg")
    done
    # npm fetches the OpenAPI linter (npm_tools); a Node.js from elsewhere
    # (NodeSource) brings its own npm, which Debian's package would conflict with
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if ((${#missing[@]} == 0)); then
        log "dependencies present"
        return
    fi
    [ "$(id -u)" = 0 ] || die "missing packages (run as root or install): ${missing[*]}"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's postgresql package would start a cluster of its own; we run ours.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian's recipe for out-of-tree modules (dh nginx_mod): configure the
# packaged nginx sources with the packaged flags, build only the modules.
# The sources are copied so that configure never writes into /usr/share.
# $1: build flavour ("" or "asan"), extra cc flags follow.
build_module() {
    local flavour=$1 extra_cc=$2
    local bld="$BUILD_DIR/${flavour:-release}"
    local src="$BUILD_DIR/nginx-src"
    local stamp="$bld/.configured"

    [ -d "$NGINX_SRC" ] || die "$NGINX_SRC is missing: run ./build.sh deps (package nginx-dev)"
    mkdir -p "$BUILD_DIR"
    if [ ! -d "$src" ] || [ "$NGINX_SRC/conf_flags" -nt "$src/conf_flags" ]; then
        rm -rf "$src"
        cp -a "$NGINX_SRC" "$src"
    fi

    if [ ! -f "$stamp" ] || [ "$ROOT/config" -nt "$stamp" ] \
        || [ "$ROOT/build.sh" -nt "$stamp" ] \
        || [ -n "$(find "$ROOT/$MODULE_NAME" -newer "$stamp" -name '*.h' -print -quit)" ]
    then
        log "configuring ($flavour)"
        # shellcheck disable=SC1091
        (cd "$src" && . ./conf_flags && ./configure "${NGX_CONF_FLAGS[@]}" \
            --with-cc-opt="-g -O2 -fPIC -Wall -Wextra -Wno-unused-parameter -Werror $extra_cc" \
            --with-ld-opt="-Wl,-z,relro -Wl,-z,now -fPIC $extra_cc" \
            --add-dynamic-module="$ROOT" \
            --builddir="$bld") > "$BUILD_DIR/configure-${flavour:-release}.log" 2>&1 \
            || { tail -n 30 "$BUILD_DIR/configure-${flavour:-release}.log"; die "configure failed"; }
        touch "$stamp"
    fi

    log "compiling ($flavour)"
    make -s -f "$bld/Makefile" -C "$src" -j"$(nproc)" modules >&2
    # a new file, renamed into place: a running nginx keeps the old one
    # mapped instead of crashing on a rewritten library
    cp "$bld/$MODULE_NAME.so" "$BUILD_DIR/.$MODULE_NAME.so.new"
    mv -f "$BUILD_DIR/.$MODULE_NAME.so.new" "$BUILD_DIR/$MODULE_NAME${flavour:+-$flavour}.so"
}

cmd_build() {
    build_module "" ""
    # The check Debian runs after building a module: the packaged binary
    # must accept it with nothing else configured.
    local tmp
    tmp=$(mktemp -d)
    printf 'load_module %s;\nevents {}\n' "$BUILD_DIR/$MODULE_NAME.so" > "$tmp/nginx.conf"
    "$NGINX_BIN" -t -q -p "$tmp" -c "$tmp/nginx.conf" -g "error_log $tmp/error.log; pid $tmp/nginx.pid;" \
        || die "nginx -t rejected the module"
    rm -rf "$tmp"
    log "built $BUILD_DIR/$MODULE_NAME.so"
}

# Tools the test suite takes from npm (@redocly/cli, the OpenAPI linter),
# pinned with their lock file in tools/npm and installed with "npm ci" under
# build/npm (git-ignored); again only when the lock file changed.
# @redocly/cli 1.x: 2.x needs Node.js 20.19, Debian bookworm has 18.
npm_tools() {
    local dir="$BUILD_DIR/npm"
    if [ -x "$dir/node_modules/.bin/redocly" ] \
        && cmp -s "$ROOT/tools/npm/package-lock.json" "$dir/package-lock.json"; then
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "build.sh: npm is missing: run ./build.sh deps" >&2
        return 1
    fi
    log "installing npm tools (tools/npm) into build/npm"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$ROOT/tools/npm/package.json" "$ROOT/tools/npm/package-lock.json" "$dir/"
    if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2); then
        echo "build.sh: npm ci in build/npm failed (is the npm registry reachable?)" >&2
        return 1
    fi
}

# Undefined behaviour stops the process: nginx clears its workers'
# environment before UBSan reads UBSAN_OPTIONS, so a report that only
# printed would go to error.log unseen; a dead worker fails the test.
cmd_build_asan() {
    build_module asan "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
}

cmd_test() {
    cmd_deps
    cmd_build
    cmd_build_asan
    # shellcheck source=t/test-env.sh
    . "$ROOT/t/test-env.sh"
    test_main "$@"
}

cmd_run() {
    cmd_deps
    cmd_build
    # shellcheck source=conf/run.sh
    . "$ROOT/conf/run.sh"
    run_main "$@"
}

cmd_stop() {
    # shellcheck source=conf/run.sh
    . "$ROOT/conf/run.sh"
    stop_main "$@"
}

cmd_fund() {
    # shellcheck source=conf/run.sh
    . "$ROOT/conf/run.sh"
    fund_main "$@"
}

cmd_refund() {
    # shellcheck source=conf/run.sh
    . "$ROOT/conf/run.sh"
    refund_main "$@"
}

cmd_fuzz() {
    cmd_deps
    make -C "$ROOT/fuzz" run SECONDS="${FUZZ_SECONDS:-300}"
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        deps) cmd_deps ;;
        build) cmd_deps; cmd_build ;;
        build-asan) cmd_deps; cmd_build_asan ;;
        run) cmd_run "$@" ;;
        stop) cmd_stop "$@" ;;
        fund) cmd_fund "$@" ;;
        refund) cmd_refund "$@" ;;
        test) cmd_test "$@" ;;
        fuzz) cmd_fuzz ;;
        *) sed -n '2,12s/^# \{0,1\}//p' "$0"; [ -z "$cmd" ] || exit 2 ;;
    esac
}

main "$@"
