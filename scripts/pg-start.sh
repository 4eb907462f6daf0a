#!/usr/bin/env bash
# Start a throwaway PostgreSQL on a free loopback port and print its SQLAlchemy URL.
#
#   scripts/pg-start.sh STATE_DIR      -> prints postgresql+psycopg://gpuplane@127.0.0.1:PORT/postgres
#
# Installs the Debian `postgresql` package when no server binaries are found (needs root and
# apt-get). initdb refuses to run as root, so as root the cluster belongs to the `postgres` user.
# The data directory lives under /tmp (the checkout may not be readable by `postgres`); its path
# is written to STATE_DIR/datadir so scripts/pg-stop.sh can stop and remove it.
set -euo pipefail
state=${1:?usage: pg-start.sh STATE_DIR}
mkdir -p "$state"

find_bin() {
  local name=$1 d
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    [ -x "$d/$name" ] && { echo "$d/$name"; return 0; }
  done
  return 1
}

if ! find_bin initdb >/dev/null || ! find_bin pg_ctl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "pg-start: installing PostgreSQL from Debian packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
  else
    echo "pg-start: no PostgreSQL server found; install the 'postgresql' package or set GPUPLANE_TEST_PG_URL" >&2
    exit 1
  fi
fi
INITDB=$(find_bin initdb)
PG_CTL=$(find_bin pg_ctl)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data=$(mktemp -d /tmp/gpuplane-pg.XXXXXX)
echo "$data" > "$state/datadir"

as_pg=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  chown postgres "$data"
  as_pg=(runuser -u postgres --)
fi

"${as_pg[@]}" "$INITDB" -D "$data/db" -U gpuplane --auth=trust -E UTF8 --no-sync >"$data/initdb.log" 2>&1 \
  || { cat "$data/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$PG_CTL" -D "$data/db" -l "$data/server.log" -w -t 60 \
  -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
  start >&2 || { cat "$data/server.log" >&2; exit 1; }
echo "$PG_CTL" > "$state/pg_ctl"
echo "postgresql+psycopg://gpuplane@127.0.0.1:$port/postgres" | tee "$state/url"
