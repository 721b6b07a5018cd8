#!/usr/bin/env bash
# Installs (if missing) and starts a throwaway PostgreSQL cluster for the test suites, then
# prints, as its last line, the DSTACK_TEST_DATABASE_URL to use. Idempotent: a cluster that
# is already running is reused. The cluster lives in its own directory on its own port, so
# the distribution's `main` cluster is left alone.
#
#   bash .ci/postgres.sh              install if needed, start, print the URL
#   bash .ci/postgres.sh --no-install start only (used by test/support/postgres.ts locally)
#   bash .ci/postgres.sh --stop       stop the cluster this script started
#
# Environment: DSTACK_PG_DIR (default /tmp/dstack-ts-pg), DSTACK_PG_PORT (default 54329);
# DSTACK_PG_TLS=1: the cluster also accepts TLS (`ssl = on`), with a self-signed certificate for
# 127.0.0.1 made by openssl under "$DSTACK_PG_DIR/tls" (plain connections still work).
set -euo pipefail

dir=${DSTACK_PG_DIR:-/tmp/dstack-ts-pg}
port=${DSTACK_PG_PORT:-54329}
url="postgres://postgres@127.0.0.1:${port}/postgres"
mode=${1:-}

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return 0; }
  return 1
}

as_owner() {
  # PostgreSQL refuses to run as root: run its tools as the `postgres` user when we are root.
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
  else
    "$@"
  fi
}

bin=$(find_bin || true)

if [ "$mode" = "--stop" ]; then
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    echo "stopped PostgreSQL in $dir" >&2
  fi
  exit 0
fi

if [ -z "$bin" ]; then
  if [ "$mode" = "--no-install" ]; then
    echo "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres)" >&2
    exit 2
  fi
  echo "==> apt-get install postgresql" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin=$(find_bin)
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$dir"
  chown postgres: "$dir"
else
  mkdir -p "$dir"
fi

if [ ! -f "$dir/data/PG_VERSION" ]; then
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
fi

tls_opts=""
if [ "${DSTACK_PG_TLS:-}" = 1 ]; then
  if [ ! -f "$dir/tls/server.key" ]; then
    mkdir -p "$dir/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 -subj "/CN=127.0.0.1" \
      -keyout "$dir/tls/server.key" -out "$dir/tls/server.crt" >"$dir/tls/openssl.log" 2>&1 \
      || { cat "$dir/tls/openssl.log" >&2; exit 1; }
    chmod 600 "$dir/tls/server.key"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir/tls"
  fi
  tls_opts="-c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key"
fi

if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  # Tests open many short-lived databases and connections; fsync stays on so that the
  # durability tests mean something.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 $tls_opts" >/dev/null \
    || { tail -20 "$dir/server.log" >&2; exit 1; }
fi

for _ in $(seq 1 60); do
  "$bin/pg_isready" -h 127.0.0.1 -p "$port" -q && break
  sleep 0.5
done
"$bin/pg_isready" -h 127.0.0.1 -p "$port" -q || { echo "PostgreSQL did not become ready" >&2; tail -20 "$dir/server.log" >&2; exit 1; }

echo "$url"
