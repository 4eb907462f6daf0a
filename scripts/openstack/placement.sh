#!/usr/bin/env bash
# Run a real OpenStack Placement (openstack-placement 16.x, noauth2) on a loopback port.
#
#   scripts/openstack/placement.sh start [--db sqlite|postgresql] [--state DIR] [--port PORT]
#                                        [--pg-url URL] [--workers N]
#       -> prints the Placement URL (http://127.0.0.1:PORT) on stdout; progress goes to stderr
#   scripts/openstack/placement.sh stop  [--db ...] [--state DIR]
#
# Environment:
#   GPUPLANE_OPENSTACK_HOME  OpenStack home (default: <repo>/.openstack); Placement's virtualenv
#                            lives in its placement/ folder and is reused when already installed
#                            (a second start costs ~2 s, not ~20 s)
#   PLACEMENT_PORT           port to listen on (default: a free one; or --port)
#   PLACEMENT_REQ            the pip requirement (default: openstack-placement>=16,<17)
#   PIP_INDEX_URL, PIP_CONSTRAINT ... the usual pip variables are honoured
#
# --state DIR holds one instance (config, database, pid, log, URL; default:
# $GPUPLANE_OPENSTACK_HOME/placement/run-<db>); use a different DIR to run several instances at once.
# SQLite runs ONE serial gunicorn worker (a threaded server answers 500 "database is locked").
# PostgreSQL gets `[placement] allocation_conflict_retry_count = 1`: with the default (10) Placement
# 16.0.0 over-allocates under concurrent claims (docs/openstack.md, "Upstream bugs").
# Without --pg-url a throwaway cluster is started with scripts/pg-start.sh and stopped by `stop`;
# with --pg-url (e.g. $GPUPLANE_TEST_PG_URL) a fresh database is created in that server.
# Exit codes: 0 ok, 1 failure (log tail printed), 2 usage, 3 cannot install from PyPI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
home=${GPUPLANE_OPENSTACK_HOME:-$repo/.openstack}/placement
PLACEMENT_REQ=${PLACEMENT_REQ:-"openstack-placement>=16,<17"}
GUNICORN_REQ="gunicorn>=21,<24"
PSYCOPG2_REQ="psycopg2-binary>=2.9,<3"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
log() { echo "placement.sh: $*" >&2; }
# shellcheck source=lib.sh
. "$here/lib.sh"

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
db=sqlite; state=""; port=${PLACEMENT_PORT:-}; pg_url=""; workers=""
while [ $# -gt 0 ]; do
  case "$1" in
    --db) db=${2:?--db needs sqlite or postgresql}; shift 2 ;;
    --state) state=${2:?--state needs a directory}; shift 2 ;;
    --port) port=${2:?--port needs a number}; shift 2 ;;
    --pg-url) pg_url=${2:?--pg-url needs a URL}; shift 2 ;;
    --workers) workers=${2:?--workers needs a number}; shift 2 ;;
    -h|--help) usage ;;
    *) log "unknown argument '$1'"; usage ;;
  esac
done
case "$db" in sqlite|postgresql) ;; *) log "--db must be sqlite or postgresql, got '$db'"; exit 2 ;; esac
state=${state:-$home/run-$db}
venv=$home/venv

# -- stop ------------------------------------------------------------------------------------
stop_instance() {
  stop_pid gunicorn INT  # gunicorn: quick shutdown
  if [ -f "$state/pg/datadir" ]; then
    "$repo/scripts/pg-stop.sh" "$state/pg" || true
  fi
  drop_databases "$venv/bin/python"
  rm -f "$state/url"
}

if [ "$cmd" = stop ]; then
  [ -d "$state" ] || exit 0
  stop_instance
  log "stopped ($state)"
  exit 0
fi
[ "$cmd" = start ] || usage

# -- install (once; later starts reuse the venv) ---------------------------------------------
pip_install() {  # pip_install MARKER REQ...
  local marker=$1; shift
  if [ -f "$venv/.$marker" ]; then return 0; fi
  log "installing $* into $venv (first run only; ~20 s)"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check "$@" >"$home/pip.log" 2>&1; then
    tail -n 15 "$home/pip.log" >&2
    log "cannot install $* from PyPI: is PyPI reachable (or PIP_INDEX_URL set)? To test against" \
        "a Placement that is already running, set GPUPLANE_TEST_PLACEMENT_URL instead"
    exit 3
  fi
  touch "$venv/.$marker"
}

mkdir -p "$home"
exec 9>"$home/.install.lock"
flock 9  # two concurrent starts must not install into the same venv at once
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { log "python3 -m venv failed (install python3-venv)"; exit 1; }
fi
pip_install installed-placement "$PLACEMENT_REQ" "$GUNICORN_REQ"
if [ "$db" = postgresql ] || [ -n "$pg_url" ]; then
  pip_install installed-psycopg2 "$PSYCOPG2_REQ"
fi
flock -u 9

# -- configure -------------------------------------------------------------------------------
mkdir -p "$state"
if [ -f "$state/gunicorn.pid" ] && kill -0 "$(cat "$state/gunicorn.pid")" 2>/dev/null; then
  log "already running; stop it first: $0 stop --state $state"; exit 1
fi
stop_instance  # leftovers of a crashed run
fail() {
  log "$*"
  [ -f "$state/gunicorn.log" ] && tail -n 20 "$state/gunicorn.log" >&2
  stop_instance
  exit 1
}

if [ "$db" = sqlite ]; then
  rm -f "$state/placement.sqlite"
  connection="sqlite:///$state/placement.sqlite"
  # a throwaway test database: no fsync per commit (as scripts/pg-start.sh runs PostgreSQL)
  sqlite_opts="sqlite_synchronous = false"
  retry=""
  workers=${workers:-1}
  worker_args=(-w "$workers" -k sync)
else
  if [ -z "$pg_url" ]; then
    pg_url=$("$repo/scripts/pg-start.sh" "$state/pg") || fail "PostgreSQL did not start"
  fi
  # postgresql+psycopg://user@host:port/db -> a libpq URL to the server's maintenance database
  admin_url=$(echo "$pg_url" | sed -E 's#^postgresql(\+[a-z0-9]+)?://#postgresql://#')
  dbname=placement_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
  "$venv/bin/python" - "$admin_url" "$dbname" <<'EOF' || fail "cannot create the database in $pg_url"
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1]); conn.autocommit = True
conn.cursor().execute(f'CREATE DATABASE "{sys.argv[2]}"')
EOF
  echo "$admin_url $dbname" > "$state/pg-dropdb"
  connection="postgresql+psycopg2://${admin_url#postgresql://}"
  connection="${connection%/*}/$dbname"
  sqlite_opts=""
  retry=$'[placement]\n# Placement 16.0.0 over-allocates under concurrent claims with the default (10):\n# the server-side retry re-runs inside the same transaction. 1 = no server retry; the\n# loser gets 409 placement.concurrent_update and the client retries (as Nova does).\nallocation_conflict_retry_count = 1'
  workers=${workers:-2}
  worker_args=(-w "$workers" -k gthread --threads 4)
fi

cat >"$state/placement.conf" <<EOF
[DEFAULT]
debug = false
[api]
auth_strategy = noauth2
[placement_database]
connection = $connection
$sqlite_opts
$retry
EOF

"$venv/bin/placement-manage" --config-file "$state/placement.conf" db sync \
  >"$state/dbsync.log" 2>&1 || { cat "$state/dbsync.log" >&2; fail "placement-manage db sync failed"; }

# -- serve -----------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
fixed_port=$port
for attempt in 1 2 3; do
  port=${fixed_port:-$(free_port)}
  : >"$state/gunicorn.log"
  OS_PLACEMENT_CONFIG_DIR=$state setsid "$venv/bin/gunicorn" "${worker_args[@]}" \
    -b "127.0.0.1:$port" --timeout 120 --error-logfile "$state/gunicorn.log" \
    placement.wsgi.api:application </dev/null >>"$state/gunicorn.log" 2>&1 &
  echo $! >"$state/gunicorn.pid"
  url="http://127.0.0.1:$port"
  if python3 - "$url" "$(cat "$state/gunicorn.pid")" <<'EOF'
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)  # gunicorn exited (port taken?)
    try:
        with urllib.request.urlopen(url + "/", timeout=2) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
  then
    echo "$url" >"$state/url"
    log "Placement ($db) at $url, state in $state"
    echo "$url"
    exit 0
  fi
  pid=$(cat "$state/gunicorn.pid")
  kill -0 "$pid" 2>/dev/null && { kill -TERM "$pid" 2>/dev/null || true; sleep 0.5; }
  rm -f "$state/gunicorn.pid"
  [ -n "$fixed_port" ] && break
  grep -q "Address already in use" "$state/gunicorn.log" || break
done
fail "Placement did not answer on $url within 60 s"
