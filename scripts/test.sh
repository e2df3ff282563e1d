#!/usr/bin/env bash
# Run the whole test suite. PostgreSQL and Redis tests use TEST_POSTGRES_URL /
# TEST_REDIS_URL when set (.ci/run starts both servers and sets them); otherwise, where
# the server binaries are installed, throwaway instances are started on free ports for
# this run and removed after it. Without the binaries those tests are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
scratch=$(mktemp -d)
chmod 755 "$scratch"
pg_ctl_cmd=""
redis_pidfile=""

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }

cleanup() {
    if [ -n "$pg_ctl_cmd" ]; then as_postgres "$pg_ctl_cmd stop -m immediate" >/dev/null 2>&1 || true; fi
    if [ -n "$redis_pidfile" ] && [ -f "$redis_pidfile" ]; then kill "$(cat "$redis_pidfile")" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

if [ -z "${TEST_REDIS_URL:-}" ]; then
    if command -v redis-server >/dev/null 2>&1; then
        port=$(free_port)
        redis_pidfile="$scratch/redis.pid"
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
            --daemonize yes --pidfile "$redis_pidfile" --dir "$scratch" >/dev/null
        export TEST_REDIS_URL="redis://127.0.0.1:${port}/0"
        echo "test.sh: started a throwaway Redis on port $port"
    else
        echo "test.sh: Redis tests skipped (no redis-server; install it or set TEST_REDIS_URL)"
    fi
fi

if [ -z "${TEST_POSTGRES_URL:-}" ]; then
    pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] && { [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1; }; then
        port=$(free_port)
        mkdir -p "$scratch/pg"
        [ "$(id -u)" = 0 ] && chown postgres "$scratch/pg"
        as_postgres "$pgbin/initdb -D $scratch/pg/data -U postgres --auth=trust -E UTF8" >/dev/null
        pg_ctl_cmd="$pgbin/pg_ctl -D $scratch/pg/data"
        as_postgres "$pg_ctl_cmd -w -l $scratch/pg/log -o '-p $port -k $scratch/pg -c listen_addresses=127.0.0.1' start" >/dev/null
        export TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:${port}/postgres"
        echo "test.sh: started a throwaway PostgreSQL on port $port"
    else
        echo "test.sh: PostgreSQL tests skipped (no PostgreSQL server; install it or set TEST_POSTGRES_URL)"
    fi
fi

"$PY" -m pytest -q "$@"
