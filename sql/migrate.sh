#!/usr/bin/env bash
# Bring the database to this checkout's schema (psql only; safe to run twice
# and concurrently):
#   0. before the transaction, in autocommit: sql/online/*.sql, the steps
#      that cannot run in a transaction (CREATE INDEX CONCURRENTLY on a live
#      ledger), each a no-op when done already (sql/README.md, "Indexes on a
#      live ledger");
# then in ONE transaction under an advisory lock:
#   1. the numbered migrations (sql/NNN_name.sql) not yet recorded in
#      billing.schema_migrations, in order, each with its row;
#   2. every function file (sql/functions/_*.sql first, then the others),
#      CREATE OR REPLACE, on every run; EXECUTE is revoked from everyone
#      first and each file grants billing_app what it may call;
#   3. the --grant roles, and with --grant-runtime the server's login.
# Nothing is committed unless all of it succeeds. Rules: sql/README.md.
#
# Usage:
#   sql/migrate.sh [--grant ROLE]... [--grant-runtime] [DATABASE_URL]
#   sql/migrate.sh --online-only [DATABASE_URL]
#   DATABASE_URL=... sql/migrate.sh          (or MIGRATE_DATABASE_URL, which wins)
#
# --online-only    only step 0: build the new indexes ahead of a deployment,
#                  without a deadline (docs/operations.md).
# --grant ROLE     also GRANT billing_app TO ROLE (the runtime login).
# --grant-runtime  also GRANT billing_app TO the login of $DATABASE_URL, the
#                  server's URL (asked from the server with one connection):
#                  the server's sessions SET ROLE billing_app, which needs it,
#                  also when that login is the schema owner.
#
# A connection_limit=N query parameter (used by the nginx module's pool) is
# removed from the URL before psql/libpq sees it.
set -euo pipefail

usage() {
    sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    printf 'migrate.sh: %s\n' "$*" >&2
    exit 1
}

# Remove connection_limit=N from a URI query string or a keyword/value conninfo.
strip_connection_limit() {
    local url=$1 base query out param
    case $url in
        postgres://*|postgresql://*)
            if [[ $url != *\?* ]]; then
                printf '%s' "$url"
                return
            fi
            base=${url%%\?*}
            query=${url#*\?}
            out=
            local -a params
            IFS='&' read -r -a params <<< "$query"
            for param in "${params[@]}"; do
                [[ -z $param || $param == connection_limit=* ]] && continue
                out=${out:+$out&}$param
            done
            if [[ -n $out ]]; then
                printf '%s?%s' "$base" "$out"
            else
                printf '%s' "$base"
            fi
            ;;
        *)
            printf '%s' "$url" | sed -E 's/(^|[[:space:]])connection_limit[[:space:]]*=[[:space:]]*[^[:space:]]*//g'
            ;;
    esac
}

# psql-quote a file name for \i ('...' with '' for ').
psql_quote() {
    local s=${1//\'/\'\'}
    printf "'%s'" "$s"
}

grants=()
grant_runtime=
online_only=
url=
while [[ $# -gt 0 ]]; do
    case $1 in
        --grant)
            [[ $# -ge 2 && -n $2 ]] || die "--grant needs a role name"
            grants+=("$2")
            shift 2
            ;;
        --grant-runtime)
            grant_runtime=1
            shift
            ;;
        --online-only)
            online_only=1
            shift
            ;;
        --grant=*)
            grants+=("${1#--grant=}")
            shift
            ;;
        -h|--help)
            usage
            exit 0
            ;;
        -*)
            die "unknown option $1"
            ;;
        *)
            [[ -z $url ]] || die "more than one database URL given"
            url=$1
            shift
            ;;
    esac
done

url=${url:-${MIGRATE_DATABASE_URL:-${DATABASE_URL:-}}}
[[ -n $url ]] || die "no database URL (argument, MIGRATE_DATABASE_URL or DATABASE_URL)"
url=$(strip_connection_limit "$url")

command -v psql >/dev/null 2>&1 || die "psql not found"

# the server's login, as the server knows it (a URL may leave it to PGUSER
# or percent-encode it): one connection with the server's own URL
if [[ -n $grant_runtime ]]; then
    [[ -n ${DATABASE_URL:-} ]] || die "--grant-runtime: DATABASE_URL (the server's URL) is not set"
    runtime_login=$(psql -X -q -A -t -v ON_ERROR_STOP=1 \
                        -d "$(strip_connection_limit "$DATABASE_URL")" \
                        -c 'SELECT session_user') \
        || die "--grant-runtime: cannot connect with DATABASE_URL to learn its login"
    [[ -n $runtime_login ]] || die "--grant-runtime: no login for DATABASE_URL"
    grants+=("$runtime_login")
fi

sql_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# sorted in C collation: the order must not depend on the caller's locale
c_sorted() {
    [[ $# -eq 0 ]] || printf '%s\n' "$@" | LC_ALL=C sort
}

shopt -s nullglob
mapfile -t files < <(c_sorted "$sql_dir"/[0-9][0-9][0-9]_*.sql)
mapfile -t online < <(c_sorted "$sql_dir"/online/[0-9][0-9][0-9]_*.sql)
# the helpers shared by several files (_*.sql) before the files that use them
mapfile -t functions < <(c_sorted "$sql_dir"/functions/_*.sql
                         c_sorted "$sql_dir"/functions/[!_]*.sql)
shopt -u nullglob
[[ ${#files[@]} -gt 0 ]] || die "no migrations found in $sql_dir"
[[ ${#functions[@]} -gt 0 ]] || die "no function files found in $sql_dir/functions"

script=$(mktemp)
trap 'rm -f "$script"' EXIT

# 0. the online steps: autocommit, one statement at a time, before the
# transaction (which may then rely on what they built)
if [[ ${#online[@]} -gt 0 ]]; then
    {
        printf '%s\n' '\set ON_ERROR_STOP 1'
        printf '%s\n' 'SET client_min_messages = warning;'
        for f in "${online[@]}"; do
            printf '\\i %s\n' "$(psql_quote "$f")"
        done
    } > "$script"
    psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$script" \
        || die "an online step (sql/online/) failed; the migrations were not run"
fi
if [[ -n $online_only ]]; then
    printf 'online steps done: %d files\n' "${#online[@]}"
    exit 0
fi

{
    printf '%s\n' '\set ON_ERROR_STOP 1'
    printf '%s\n' 'SET client_min_messages = warning;'
    printf '%s\n' 'BEGIN;'
    printf '%s\n' 'SELECT pg_advisory_xact_lock(7340281190455102201) \gset'
    printf '%s\n' 'CREATE SCHEMA IF NOT EXISTS billing;'
    printf '%s\n' 'CREATE TABLE IF NOT EXISTS billing.schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());'
    seen=" "
    for f in "${files[@]}"; do
        name=$(basename "$f")
        version=$((10#${name:0:3}))
        [[ $seen != *" $version "* ]] || die "duplicate migration version ${name:0:3} ($name)"
        seen="$seen$version "
        printf 'SELECT NOT EXISTS (SELECT 1 FROM billing.schema_migrations WHERE version = %d) AS need_%d \\gset\n' \
            "$version" "$version"
        printf '\\if :need_%d\n' "$version"
        printf '\\i %s\n' "$(psql_quote "$f")"
        printf "INSERT INTO billing.schema_migrations (version, name) VALUES (%d, '%s');\n" \
            "$version" "${name//\'/\'\'}"
        printf '\\echo %s\n' "$(psql_quote "migration $name")"
        printf '%s\n' '\endif'
    done
    # Functions: what a file does not grant, nobody may execute.
    printf '%s\n' 'REVOKE ALL ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC, billing_app;'
    for f in "${functions[@]}"; do
        printf '\\i %s\n' "$(psql_quote "$f")"
    done
    # a function created just now may carry a default grant to PUBLIC
    printf '%s\n' 'REVOKE ALL ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC;'
    for role in "${grants[@]}"; do
        printf '\\set grant_role %s\n' "$(psql_quote "$role")"
        printf '%s\n' 'GRANT billing_app TO :"grant_role";'
        printf '\\echo %s\n' "$(psql_quote "granted billing_app to $role")"
    done
    printf '%s\n' 'SELECT coalesce(max(version), 0) AS schema_version FROM billing.schema_migrations \gset'
    printf '%s\n' 'COMMIT;'
    printf '\\echo %s :schema_version\n' \
        "$(psql_quote "committed: ${#functions[@]} function files, schema version")"
} > "$script"

psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$script" \
    || die "failed; nothing was committed"
