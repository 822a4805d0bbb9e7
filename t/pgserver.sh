#!/usr/bin/env bash
# Throwaway PostgreSQL 15 for the test run (./build.sh test) or for
# ./build.sh run.
#
#   t/pgserver.sh start   DIR   initdb (first time) + start + roles + DIR/env
#   t/pgserver.sh stop    DIR   pg_ctl stop -m fast
#   t/pgserver.sh kill    DIR   pg_ctl stop -m immediate (crash-like)
#   t/pgserver.sh restart DIR   start again on the same port (after stop/kill)
#   t/pgserver.sh grant   DIR   GRANT billing_app TO billing_rt (run after the
#                               migrations created billing_app)
#   t/pgserver.sh status  DIR   exit 0 when the server is running
#   t/pgserver.sh tls-nossl DIR TLS on (a self-signed certificate made here)
#                               while pg_hba accepts TCP only without it
#                               (hostnossl): libpq's default sslmode=prefer
#                               tries TLS, is refused, and reconnects plain;
#                               restarts the server
#
# DIR/env holds sourceable lines:
#   export BILLING_TEST_ADMIN_URL=postgresql://billing_owner:...@127.0.0.1:PORT/billing
#   export TEST_NGINX_DATABASE_URL=postgresql://billing_rt:...@127.0.0.1:PORT/billing
#   export BILLING_PG_DIR=DIR
#   export BILLING_PG_PORT=PORT
# PGPORT_WANTED=NNNN chooses the port of a fresh server (default: a free one).
# When run as root, every server-side command runs as the `postgres` user.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
if [[ ! -x "$PGBIN/pg_ctl" ]]; then
    PGBIN=$(pg_config --bindir)
fi

usage() {
    echo "usage: $0 start|stop|kill|restart|grant|status|tls-nossl DIR" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
cmd=$1
dir=$2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data="$dir/data"
envfile="$dir/env"
portfile="$dir/port"
logfile="$dir/postgres.log"

# run a command as the owner of the cluster
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    if [[ -n "${PGPORT_WANTED:-}" ]]; then
        echo "$PGPORT_WANTED"
        return
    fi
    python3 - <<'EOF' 2>/dev/null || perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1) or die; print $s->sockport, "\n"'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

is_running() {
    [[ -f "$data/postmaster.pid" ]] && as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1
}

# psql as the bootstrap superuser (postgres) over the unix socket in DIR
psql_super() {
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$(cat "$portfile")" \
        -U postgres "$@"
}

password_of() {
    # stable per cluster: generated once, kept in DIR/<role>.password
    local f="$dir/$1.password"
    if [[ ! -s "$f" ]]; then
        (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
    fi
    cat "$f"
}

write_env() {
    local port owner_pw rt_pw
    port=$(cat "$portfile")
    owner_pw=$(password_of billing_owner)
    rt_pw=$(password_of billing_rt)
    cat >"$envfile.tmp" <<EOF
export BILLING_TEST_ADMIN_URL=postgresql://billing_owner:$owner_pw@127.0.0.1:$port/billing
export TEST_NGINX_DATABASE_URL=postgresql://billing_rt:$rt_pw@127.0.0.1:$port/billing
export BILLING_PG_DIR=$dir
export BILLING_PG_PORT=$port
EOF
    mv "$envfile.tmp" "$envfile"
}

start_server() {
    local port tries=0
    while :; do
        port=$(cat "$portfile")
        if as_pg "$PGBIN/pg_ctl" -D "$data" -l "$logfile" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null; then
            return 0
        fi
        tries=$((tries + 1))
        # a port chosen by us and taken meanwhile: pick another one, but
        # only for a fresh cluster (restart must keep its port)
        if [[ "${1:-}" == fresh && -z "${PGPORT_WANTED:-}" && $tries -lt 5 ]] &&
            grep -q "could not bind\|could not create any TCP" "$logfile"; then
            free_port >"$portfile"
            continue
        fi
        echo "pgserver: could not start PostgreSQL on port $port; log tail:" >&2
        tail -n 15 "$logfile" >&2
        return 1
    done
}

setup_roles() {
    local owner_pw rt_pw
    owner_pw=$(password_of billing_owner)
    rt_pw=$(password_of billing_rt)
    psql_super -d postgres <<EOF
SELECT 'CREATE DATABASE billing' WHERE NOT EXISTS
    (SELECT 1 FROM pg_database WHERE datname = 'billing')\gexec
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'billing_owner') THEN
        CREATE ROLE billing_owner LOGIN SUPERUSER;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'billing_rt') THEN
        CREATE ROLE billing_rt LOGIN;
    END IF;
END
\$\$;
ALTER ROLE billing_owner WITH LOGIN SUPERUSER PASSWORD '$owner_pw';
ALTER ROLE billing_rt WITH LOGIN NOSUPERUSER PASSWORD '$rt_pw';
ALTER DATABASE billing OWNER TO billing_owner;
EOF
}

case "$cmd" in
start)
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$dir"
    fi
    if [[ -f "$data/PG_VERSION" ]] && is_running; then
        write_env
        exit 0
    fi
    if [[ ! -f "$data/PG_VERSION" ]]; then
        free_port >"$portfile"
        rm -rf "$data"
        as_pg "$PGBIN/initdb" -D "$data" -U postgres -A trust -E UTF8 \
            --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 1
        }
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$dir'"
            echo "max_connections = 200"
            echo "fsync = off"
            echo "full_page_writes = off"
        } >>"$data/postgresql.conf"
        # local socket: trust (bootstrap); TCP: passwords
        cat >"$data/pg_hba.conf" <<EOF
local   all all                 trust
host    all all 127.0.0.1/32    scram-sha-256
EOF
        start_server fresh
    else
        [[ -s "$portfile" ]] || free_port >"$portfile"
        start_server
    fi
    setup_roles
    write_env
    ;;
restart)
    [[ -f "$data/PG_VERSION" ]] || { echo "no cluster in $data" >&2; exit 1; }
    if ! is_running; then
        start_server
    fi
    write_env
    ;;
stop)
    if is_running; then
        as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    fi
    ;;
kill)
    if is_running; then
        as_pg "$PGBIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null
    fi
    ;;
grant)
    psql_super -d billing -c 'GRANT billing_app TO billing_rt'
    ;;
status)
    is_running
    ;;
tls-nossl)
    [[ -f "$data/PG_VERSION" ]] || { echo "no cluster in $data" >&2; exit 1; }
    as_pg openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
        -keyout "$data/server.key" -out "$data/server.crt" 2>/dev/null
    as_pg chmod 600 "$data/server.key"
    {
        echo "ssl = on"
        echo "ssl_cert_file = 'server.crt'"
        echo "ssl_key_file = 'server.key'"
    } >>"$data/postgresql.conf"
    cat >"$data/pg_hba.conf" <<EOF
local     all all                 trust
hostnossl all all 127.0.0.1/32    scram-sha-256
EOF
    if is_running; then
        as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    fi
    start_server
    write_env
    ;;
*)
    usage
    ;;
esac
