#!/usr/bin/env bash
# Run a real OpenStack Keystone (keystone 30.x, SQLite, fernet tokens) on a loopback port.
#
#   scripts/openstack/keystone.sh start [--state DIR] [--port PORT]
#       -> prints the identity URL (http://127.0.0.1:PORT/v3) on stdout; progress goes to stderr;
#          DIR/admin-openrc holds the OS_* variables of the bootstrap admin (mode 0600)
#   scripts/openstack/keystone.sh stop  [--state DIR]
#
# Environment:
#   GPUPLANE_OPENSTACK_HOME   OpenStack home (default: <repo>/.openstack); Keystone's virtualenv
#                             lives in its keystone/ folder and is reused when already installed
#                             (a second start costs ~10 s, not ~40 s)
#   KEYSTONE_PORT             port to listen on (default: a free one)
#   KEYSTONE_ADMIN_PASSWORD   password of the bootstrap user `admin` (default: a random one)
#   PIP_INDEX_URL, PIP_CONSTRAINT ... the usual pip variables are honoured
#
# Every start is a fresh Keystone: new SQLite database, new fernet keys, `keystone-manage
# bootstrap` (domain Default, project admin, user admin with role admin, region RegionOne,
# roles admin/manager/member/reader/service). One gunicorn worker (SQLite). `[identity]
# password_hash_rounds = 4` keeps token issue fast; never use these settings in production.
# --state DIR holds one instance (config, keys, database, pid, log, URL; default:
# $GPUPLANE_OPENSTACK_HOME/keystone/run); use a different DIR to run several at once.
# Exit codes: 0 ok, 1 failure (log tail printed), 2 usage, 3 cannot install from PyPI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
home=${GPUPLANE_OPENSTACK_HOME:-$repo/.openstack}/keystone
KEYSTONE_REQ=${KEYSTONE_REQ:-"keystone>=30,<31"}
GUNICORN_REQ="gunicorn>=21,<24"

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { echo "keystone.sh: $*" >&2; }
# shellcheck source=lib.sh
. "$here/lib.sh"

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
state=""; port=${KEYSTONE_PORT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --state) state=${2:?--state needs a directory}; shift 2 ;;
    --port) port=${2:?--port needs a number}; shift 2 ;;
    -h|--help) usage ;;
    *) log "unknown argument '$1'"; usage ;;
  esac
done
state=${state:-$home/run}
venv=$home/venv

stop_instance() {
  stop_pid gunicorn TERM
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
mkdir -p "$home"
exec 9>"$home/.install.lock"
flock 9  # two concurrent starts must not install into the same venv at once
if [ ! -f "$venv/.installed-keystone" ]; then
  t0=$(date +%s)
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || { log "python3 -m venv failed (install python3-venv)"; exit 1; }
  fi
  log "installing $KEYSTONE_REQ $GUNICORN_REQ into $venv (first run only; ~30 s)"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check "$KEYSTONE_REQ" "$GUNICORN_REQ" \
      >"$home/pip.log" 2>&1; then
    tail -n 15 "$home/pip.log" >&2
    log "cannot install $KEYSTONE_REQ from PyPI: is PyPI reachable (or PIP_INDEX_URL set)? To" \
        "test against a Keystone that is already running, set GPUPLANE_TEST_KEYSTONE_URL instead"
    exit 3
  fi
  touch "$venv/.installed-keystone"
  log "installed in $(( $(date +%s) - t0 )) s"
fi
flock -u 9

# -- configure -------------------------------------------------------------------------------
mkdir -p "$state"
if [ -f "$state/gunicorn.pid" ] && kill -0 "$(cat "$state/gunicorn.pid")" 2>/dev/null; then
  log "already running at $(cat "$state/url" 2>/dev/null); stop it first: $0 stop --state $state"
  exit 1
fi
stop_instance  # leftovers of a crashed run
fail() {
  log "$*"
  [ -f "$state/keystone.log" ] && tail -n 20 "$state/keystone.log" >&2
  [ -f "$state/gunicorn.log" ] && tail -n 20 "$state/gunicorn.log" >&2
  stop_instance
  exit 1
}
rm -rf "$state/keystone.sqlite" "$state/fernet-keys" "$state/credential-keys"
: >"$state/keystone.log"
password=${KEYSTONE_ADMIN_PASSWORD:-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}
user=$(id -un); group=$(id -gn)

cat >"$state/keystone.conf" <<EOF
[DEFAULT]
debug = false
log_file = $state/keystone.log
[database]
connection = sqlite:///$state/keystone.sqlite
[token]
provider = fernet
expiration = 3600
[fernet_tokens]
key_repository = $state/fernet-keys
[credential]
key_repository = $state/credential-keys
[identity]
# bcrypt's minimum: token issue in ~50 ms instead of ~500 ms (tests only)
password_hash_rounds = 4
[cache]
enabled = false
EOF

manage() { "$venv/bin/keystone-manage" --config-file "$state/keystone.conf" "$@" \
             >>"$state/manage.log" 2>&1 || fail "keystone-manage $1 failed (see $state/manage.log)"; }
: >"$state/manage.log"
manage db_sync
manage fernet_setup --keystone-user "$user" --keystone-group "$group"
manage credential_setup --keystone-user "$user" --keystone-group "$group"

# -- serve -----------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
fixed_port=$port
for attempt in 1 2 3; do
  port=${fixed_port:-$(free_port)}
  url="http://127.0.0.1:$port/v3"
  manage bootstrap --bootstrap-password "$password" --bootstrap-admin-url "$url/" \
    --bootstrap-internal-url "$url/" --bootstrap-public-url "$url/" \
    --bootstrap-region-id RegionOne
  # keystone's WSGI app parses sys.argv with oslo.config: gunicorn gets no argument at all and
  # reads ./gunicorn.conf.py instead
  cat >"$state/gunicorn.conf.py" <<EOF
wsgi_app = "keystone.wsgi.api:application"
bind = "127.0.0.1:$port"
workers = 1
worker_class = "sync"
timeout = 120
errorlog = "$state/gunicorn.log"
EOF
  : >"$state/gunicorn.log"
  (cd "$state" && OS_KEYSTONE_CONFIG_DIR=$state OS_KEYSTONE_CONFIG_FILES=keystone.conf \
     exec setsid "$venv/bin/gunicorn" </dev/null >>"$state/gunicorn.log" 2>&1) &
  echo $! >"$state/gunicorn.pid"
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
        with urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
  then
    echo "$url" >"$state/url"
    umask 077
    cat >"$state/admin-openrc" <<EOF
export OS_AUTH_URL=$url
export OS_IDENTITY_API_VERSION=3
export OS_USERNAME=admin
export OS_PASSWORD=$password
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_NAME=admin
export OS_PROJECT_DOMAIN_NAME=Default
EOF
    log "Keystone at $url, state in $state, admin credentials in $state/admin-openrc"
    echo "$url"
    exit 0
  fi
  pid=$(cat "$state/gunicorn.pid")
  kill -0 "$pid" 2>/dev/null && { kill -TERM "$pid" 2>/dev/null || true; sleep 0.5; }
  rm -f "$state/gunicorn.pid"
  [ -n "$fixed_port" ] && break
  grep -q "Address already in use" "$state/gunicorn.log" || break
done
fail "Keystone did not answer on $url within 60 s"
