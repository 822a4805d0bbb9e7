#!/usr/bin/env bash
# Apply the numbered SQL migrations (sql/NNN_name.sql) that are not yet recorded
# in billing.schema_migrations. psql only; safe to run twice and concurrently
# (a session advisory lock serialises runs). Each file and its
# schema_migrations row are committed in ONE transaction (ON_ERROR_STOP).
#
# Usage:
#   sql/migrate.sh [--grant ROLE]... [DATABASE_URL]
#   DATABASE_URL=... sql/migrate.sh          (or MIGRATE_DATABASE_URL, which wins)
#
# --grant ROLE   after migrating, GRANT billing_app TO ROLE (the runtime login).
#
# A connection_limit=N query parameter (used by the nginx module's pool) is
# removed from the URL before psql/libpq sees it.
set -euo pipefail

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
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
url=
while [[ $# -gt 0 ]]; do
    case $1 in
        --grant)
            [[ $# -ge 2 && -n $2 ]] || die "--grant needs a role name"
            grants+=("$2")
            shift 2
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

sql_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

shopt -s nullglob
files=("$sql_dir"/[0-9][0-9][0-9]_*.sql)
shopt -u nullglob
[[ ${#files[@]} -gt 0 ]] || die "no migrations found in $sql_dir"

# Build one psql script so the advisory lock is held for the whole run.
script=$(mktemp)
trap 'rm -f "$script"' EXIT

{
    printf '%s\n' '\set ON_ERROR_STOP 1'
    printf '%s\n' 'SET client_min_messages = warning;'
    printf '%s\n' "SELECT pg_advisory_lock(7340281190455102201) \\gset"
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
        printf '%s\n' 'BEGIN;'
        printf '\\i %s\n' "$(psql_quote "$f")"
        printf "INSERT INTO billing.schema_migrations (version, name) VALUES (%d, '%s');\n" \
            "$version" "${name//\'/\'\'}"
        printf '%s\n' 'COMMIT;'
        printf '\\echo %s\n' "$(psql_quote "applied $name")"
        printf '%s\n' '\endif'
    done
    for role in "${grants[@]}"; do
        printf '\\set grant_role %s\n' "$(psql_quote "$role")"
        printf '%s\n' 'GRANT billing_app TO :"grant_role";'
        printf '\\echo %s\n' "$(psql_quote "granted billing_app to $role")"
    done
    printf '%s\n' 'SELECT coalesce(max(version), 0) AS schema_version FROM billing.schema_migrations \gset'
    printf '%s\n' '\echo schema version :schema_version'
    printf '%s\n' "SELECT pg_advisory_unlock(7340281190455102201) \\gset"
} > "$script"

psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$script"
