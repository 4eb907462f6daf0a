#!/usr/bin/env bash
# Run a real OpenStack Nova (nova 34.x: api, conductor, scheduler, compute with the fake virt
# driver) with RabbitMQ and a real Glance (33.x), against a running Placement, on loopback ports.
#
#   scripts/openstack/nova.sh start --placement-url URL [--state DIR] [--db postgresql|sqlite]
#                                   [--pg-url URL] [--provider-config FILE]
#       -> prints the compute API URL (http://127.0.0.1:PORT/v2.1) on stdout; progress goes to
#          stderr; DIR/env holds NOVA_URL, GLANCE_URL, NOVA_IMAGE_ID, NOVA_HOST, NOVA_NODE_UUID,
#          PLACEMENT_URL, TRANSPORT_URL and the measured NOVA_START_S
#   scripts/openstack/nova.sh stop  [--state DIR]
#
# Environment:
#   GPUPLANE_OPENSTACK_HOME  OpenStack home (default: <repo>/.openstack); Nova's and Glance's
#                            virtualenvs live in its nova/ and glance/ folders and are reused
#                            when already installed (~90 s the first time)
#   NOVA_REQ, GLANCE_REQ     pip requirements (default: nova>=34,<35 and glance>=33,<34)
#   PIP_INDEX_URL, PIP_CONSTRAINT ... the usual pip variables are honoured
#
# What runs (docs/openstack.md, "Nova"): RabbitMQ (Debian's rabbitmq-server, installed with
# apt-get when missing; a private node bound to 127.0.0.1), Glance (SQLite, file store,
# unauthenticated paste flavor, one community image `cirros-fake`), and Nova: nova-api under
# gunicorn without `authtoken` (nova 34 has no noauth2: the pipeline keeps `keystonecontext`, so
# Nova trusts the X-User-Id / X-Project-Id / X-Roles headers — never expose it), one conductor,
# one scheduler, one nova-compute with `fake.FakeDriverWithoutFakeNodes` whose compute node gets
# the GPU classes and traits of the provider config (default: CUSTOM_MIG_1G_10GB 7 and
# CUSTOM_GPU_MILLI 2000, traits CUSTOM_GPU_H100_80GB and CUSTOM_GPU_MIG_MODE). Nova talks to
# Placement with keystoneauth's admin_token plugin (`X-Auth-Token: admin`, what a noauth2
# Placement accepts). Nova's three databases (api, cell0, cell1) are PostgreSQL databases in
# --pg-url (e.g. $GPUPLANE_TEST_PG_URL) or in a throwaway cluster from scripts/pg-start.sh,
# dropped / stopped by `stop`. `--db sqlite` uses SQLite files instead: it starts ~1 s faster,
# but nova-conductor's concurrent writes then sometimes fail with "database is locked" (a boot
# went to ERROR in 1 of 3 test runs), so it is not the default.
# There is no Neutron: boot with `networks: none` works; GET /servers/{id}, /servers/detail and
# the compute side of DELETE need Neutron and fail (see the docs).
# --state DIR holds one instance (configs, databases, pids, logs; default
# $GPUPLANE_OPENSTACK_HOME/nova/run); use a different DIR to run several at once.
# Exit codes: 0 ok, 1 failure (log tails printed, everything it started stopped), 2 usage,
# 3 cannot install from PyPI or Debian.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
oshome=${GPUPLANE_OPENSTACK_HOME:-$repo/.openstack}
NOVA_REQ=${NOVA_REQ:-"nova>=34,<35"}
GLANCE_REQ=${GLANCE_REQ:-"glance>=33,<34"}
GUNICORN_REQ="gunicorn>=21,<24"
PSYCOPG2_REQ="psycopg2-binary>=2.9,<3"
RABBIT_BIN=/usr/lib/rabbitmq/bin

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
log() { echo "nova.sh: $*" >&2; }
# shellcheck source=lib.sh
. "$here/lib.sh"

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
state=""; placement_url=""; db=postgresql; pg_url=""; provider_config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --state) state=${2:?--state needs a directory}; shift 2 ;;
    --placement-url) placement_url=${2:?--placement-url needs a URL}; shift 2 ;;
    --db) db=${2:?--db needs sqlite or postgresql}; shift 2 ;;
    --pg-url) pg_url=${2:?--pg-url needs a URL}; shift 2 ;;
    --provider-config) provider_config=${2:?--provider-config needs a file}; shift 2 ;;
    -h|--help) usage ;;
    *) log "unknown argument '$1'"; usage ;;
  esac
done
case "$db" in sqlite|postgresql) ;; *) log "--db must be sqlite or postgresql, got '$db'"; exit 2 ;; esac
state=${state:-$oshome/nova/run}
nova_venv=$oshome/nova/venv
glance_venv=$oshome/glance/venv
SERVICES="nova-compute nova-scheduler nova-conductor nova-api glance-api"

# -- stop ------------------------------------------------------------------------------------
stop_instance() {
  local s
  for s in $SERVICES; do  # all at once, then wait for each (a throwaway instance)
    [ -f "$state/$s.pid" ] || continue
    case "$s" in nova-api|glance-api) kill -INT "$(cat "$state/$s.pid")" 2>/dev/null || true ;;
                 *) kill -TERM "$(cat "$state/$s.pid")" 2>/dev/null || true ;; esac
  done
  for s in $SERVICES; do stop_pid "$s" TERM; done
  if [ -f "$state/rabbitmq/node" ]; then
    HOME=$state/rabbitmq "$RABBIT_BIN/rabbitmqctl" -n "$(cat "$state/rabbitmq/node")" stop \
      >/dev/null 2>&1 || true
    stop_pid rabbitmq-beam TERM
    rm -f "$state/rabbitmq/node"
  fi
  if [ -f "$state/rabbitmq/started-epmd" ]; then  # the epmd our node started, if now idle
    if ! epmd -names 2>/dev/null | grep -q "^name "; then epmd -kill >/dev/null 2>&1 || true; fi
    rm -f "$state/rabbitmq/started-epmd"
  fi
  if [ -f "$state/pg/datadir" ]; then "$repo/scripts/pg-stop.sh" "$state/pg" || true; fi
  drop_databases "$nova_venv/bin/python"
  rm -f "$state/url"
}

if [ "$cmd" = stop ]; then
  [ -d "$state" ] || exit 0
  stop_instance
  log "stopped ($state)"
  exit 0
fi
[ "$cmd" = start ] || usage
[ -n "$placement_url" ] || { log "start needs --placement-url (scripts/openstack/placement.sh start prints one)"; exit 2; }
placement_url=${placement_url%/}
[ -z "$provider_config" ] || [ -f "$provider_config" ] || { log "no such file: $provider_config"; exit 2; }
t_start=$(date +%s.%N)

# -- install (once; later starts reuse the venvs) --------------------------------------------
pip_install() {  # pip_install VENV MARKER REQ...
  local venv=$1 marker=$2 t0; shift 2
  [ -f "$venv/.$marker" ] && return 0
  t0=$(date +%s)
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || { log "python3 -m venv failed (install python3-venv)"; exit 1; }
  fi
  log "installing $* into $venv (first run only)"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check "$@" >"$venv/../pip.log" 2>&1; then
    tail -n 15 "$venv/../pip.log" >&2
    log "cannot install $* from PyPI: is PyPI reachable (or PIP_INDEX_URL set)?"
    exit 3
  fi
  touch "$venv/.$marker"
  log "installed $* in $(( $(date +%s) - t0 )) s"
}

mkdir -p "$oshome/nova" "$oshome/glance"
exec 9>"$oshome/nova/.install.lock"
flock 9  # two concurrent starts must not install into the same venvs at once
if [ ! -x "$RABBIT_BIN/rabbitmq-server" ]; then
  log "installing rabbitmq-server from Debian (first run only; ~12 s)"
  "$repo/scripts/apt-install.sh" rabbitmq-server >"$oshome/nova/apt.log" 2>&1 || {
    tail -n 10 "$oshome/nova/apt.log" >&2; log "cannot install rabbitmq-server (needs root and apt-get)"; exit 3; }
fi
pip_install "$nova_venv" installed-nova "$NOVA_REQ" "$GUNICORN_REQ"
pip_install "$glance_venv" installed-glance "$GLANCE_REQ" "$GUNICORN_REQ"
if [ "$db" = postgresql ] || [ -n "$pg_url" ]; then
  pip_install "$nova_venv" installed-psycopg2 "$PSYCOPG2_REQ"
fi
flock -u 9
t_installed=$(date +%s.%N)

# -- prepare ---------------------------------------------------------------------------------
mkdir -p "$state"
state=$(cd "$state" && pwd)
if [ -f "$state/nova-api.pid" ] && kill -0 "$(cat "$state/nova-api.pid")" 2>/dev/null; then
  log "already running at $(cat "$state/url" 2>/dev/null); stop it first: $0 stop --state $state"
  exit 1
fi
stop_instance  # leftovers of a crashed run
fail() {
  local f
  log "$*"
  for f in "$state"/rabbitmq/out.log "$state"/*.log; do
    [ -s "$f" ] || continue
    echo "--- $f (last lines)" >&2
    grep -v -E "DeprecationWarning|eventlet|^\s*$" "$f" | tail -n 12 >&2 || true
  done
  stop_instance
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {  # wait_http URL PIDFILE SECONDS: until URL answers (any status below 500)
  python3 - "$1" "$(cat "$2")" "$3" <<'EOF'
import os, sys, time, urllib.error, urllib.request
url, pid, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen(url, timeout=2):
            sys.exit(0)
    except urllib.error.HTTPError as e:
        if e.code < 500:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}
curl_placement() {
  python3 - "$placement_url" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/resource_providers", headers={"X-Auth-Token": "admin"})
urllib.request.urlopen(req, timeout=5).read()
EOF
}
curl_placement 2>/dev/null || { log "no Placement answers at $placement_url"; exit 1; }
rm -rf "$state/rabbitmq" "$state/glance" "$state"/*.sqlite "$state/instances" "$state/lock"
mkdir -p "$state/rabbitmq" "$state/glance/images" "$state/glance/staging" "$state/nova-state" \
         "$state/instances" "$state/lock" "$state/provider_config"
for s in $SERVICES; do : >"$state/$s.log"; done

# -- RabbitMQ: a private node on loopback (as root, with its own HOME and Erlang cookie) -----
rabbit_port=$(free_port); dist_port=$(free_port)
node="gpuplane$rabbit_port@localhost"
epmd -names >/dev/null 2>&1 || touch "$state/rabbitmq/started-epmd"
echo "[]." >"$state/rabbitmq/enabled_plugins"
(
  export HOME=$state/rabbitmq RABBITMQ_NODENAME=$node RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$rabbit_port RABBITMQ_DIST_PORT=$dist_port ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_MNESIA_BASE=$state/rabbitmq/mnesia RABBITMQ_LOG_BASE=$state/rabbitmq/log \
    RABBITMQ_ENABLED_PLUGINS_FILE=$state/rabbitmq/enabled_plugins \
    RABBITMQ_PID_FILE=$state/rabbitmq-beam.pid RABBITMQ_CONFIG_FILE=$state/rabbitmq/rabbitmq \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  exec setsid "$RABBIT_BIN/rabbitmq-server" </dev/null >"$state/rabbitmq/out.log" 2>&1
) &
echo "$node" >"$state/rabbitmq/node"
HOME=$state/rabbitmq "$RABBIT_BIN/rabbitmqctl" -n "$node" wait --timeout 60 "$state/rabbitmq-beam.pid" \
  >"$state/rabbitmq/wait.log" 2>&1 || fail "RabbitMQ did not start"
transport_url="rabbit://guest:guest@127.0.0.1:$rabbit_port/"
t_rabbit=$(date +%s.%N)

# -- Glance: SQLite, file store, no authentication, one community image ----------------------
glance_port=$(free_port)
glance_url="http://127.0.0.1:$glance_port"
cat >"$state/glance/glance-api.conf" <<EOF
[DEFAULT]
debug = false
log_file = $state/glance-api.log
enabled_import_methods = []
node_staging_uri = file://$state/glance/staging
worker_self_reference_url = $glance_url
[database]
connection = sqlite:///$state/glance/glance.sqlite
[paste_deploy]
# no authtoken: Glance trusts every caller (an unauthenticated context); tests only
flavor =
config_file = $glance_venv/etc/glance/glance-api-paste.ini
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = $state/glance/images
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
EOF
"$glance_venv/bin/glance-manage" --config-file "$state/glance/glance-api.conf" db_sync \
  >>"$state/glance-api.log" 2>&1 || fail "glance-manage db_sync failed"
cat >"$state/glance/gunicorn.conf.py" <<EOF
wsgi_app = "glance.wsgi.api:application"
bind = "127.0.0.1:$glance_port"
workers = 1
worker_class = "sync"
timeout = 120
errorlog = "$state/glance-api.log"
EOF
(cd "$state/glance" && OS_GLANCE_CONFIG_DIR=$state/glance exec setsid "$glance_venv/bin/gunicorn" \
   </dev/null >>"$state/glance-api.log" 2>&1) &
echo $! >"$state/glance-api.pid"
wait_http "$glance_url/" "$state/glance-api.pid" 60 || fail "Glance did not answer on $glance_url"
image_id=$(python3 - "$glance_url" <<'EOF'
import json, sys, urllib.request
url = sys.argv[1]
def call(method, path, body=None, ctype="application/json"):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": ctype, "X-Roles": "admin"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None
image = call("POST", "/v2/images", {"name": "cirros-fake", "disk_format": "raw",
                                     "container_format": "bare", "visibility": "community"})
call("PUT", f"/v2/images/{image['id']}/file", b"\0" * 1024, "application/octet-stream")
assert call("GET", f"/v2/images/{image['id']}")["status"] == "active"
print(image["id"])
EOF
) || fail "cannot create the Glance image"
t_glance=$(date +%s.%N)

# -- Nova: databases -------------------------------------------------------------------------
if [ "$db" = sqlite ]; then
  api_db="sqlite:///$state/nova_api.sqlite"
  cell0_db="sqlite:///$state/nova_cell0.sqlite"
  cell1_db="sqlite:///$state/nova_cell1.sqlite"
else
  if [ -z "$pg_url" ]; then
    pg_url=$("$repo/scripts/pg-start.sh" "$state/pg") || fail "PostgreSQL did not start"
  fi
  admin_url=$(echo "$pg_url" | sed -E 's#^postgresql(\+[a-z0-9]+)?://#postgresql://#')
  suffix=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
  names="nova_api_$suffix nova_cell0_$suffix nova_cell1_$suffix"
  # shellcheck disable=SC2086
  "$nova_venv/bin/python" - "$admin_url" $names <<'EOF' || fail "cannot create the databases in $pg_url"
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1]); conn.autocommit = True
for name in sys.argv[2:]:
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
EOF
  echo "$admin_url $names" >"$state/pg-dropdb"
  base="postgresql+psycopg2://${admin_url#postgresql://}"; base=${base%/*}
  api_db="$base/nova_api_$suffix"; cell0_db="$base/nova_cell0_$suffix"; cell1_db="$base/nova_cell1_$suffix"
fi

# -- Nova: configuration ---------------------------------------------------------------------
host="gpuplane-fake-$(echo "$state" | cksum | cut -c1-8)"
common_conf() {  # the part every Nova service shares
  cat <<EOF
[DEFAULT]
debug = false
# a throwaway instance: stop within 2 s of SIGTERM
graceful_shutdown_timeout = 2
host = $host
my_ip = 127.0.0.1
state_path = $state/nova-state
instances_path = $state/instances
transport_url = $transport_url
compute_driver = fake.FakeDriverWithoutFakeNodes
use_rootwrap_daemon = false
[oslo_concurrency]
lock_path = $state/lock
[glance]
endpoint_override = $glance_url
num_retries = 0
[placement]
# keystoneauth's admin_token plugin sends X-Auth-Token: admin, what a noauth2 Placement accepts
auth_type = admin_token
endpoint = $placement_url
token = admin
[compute]
provider_config_location = $state/provider_config/
[conductor]
workers = 1
[scheduler]
workers = 1
[api]
dhcp_domain =
[vnc]
enabled = false
[spice]
enabled = false
[serial_console]
enabled = false
[os_vif_ovs]
[wsgi]
api_paste_config = $state/api-paste.ini
[oslo_policy]
enforce_new_defaults = true
enforce_scope = true
[oslo_messaging_notifications]
driver = noop
EOF
}
common_conf >"$state/nova-compute.conf"  # no [database]: nova-compute must not use one
{ common_conf; cat <<EOF
[api_database]
connection = $api_db
[database]
connection = $cell1_db
EOF
} >"$state/nova.conf"
# nova 34 has no noauth2: drop authtoken, keep keystonecontext (trusts X-User-Id/X-Roles)
sed -e 's/ authtoken keystonecontext / keystonecontext /' "$nova_venv/etc/nova/api-paste.ini" \
  >"$state/api-paste.ini"
if grep -q "^keystone = .*authtoken" "$state/api-paste.ini"; then
  fail "could not remove authtoken from nova's api-paste.ini"
fi
if [ -n "$provider_config" ]; then
  cp "$provider_config" "$state/provider_config/gpuplane.yaml"
else
  cat >"$state/provider_config/gpuplane.yaml" <<'EOF'
# GPU inventory and traits of the fake compute node, in gpuplane's names
# (src/gpuplane/drivers/openstack/tree.py): one H100-80GB in MIG mode with seven 1g.10gb
# instances, and two shared GPUs counted in milli-GPUs.
meta:
  schema_version: '1.0'
providers:
  - identification:
      uuid: $COMPUTE_NODE
    inventories:
      additional:
        - CUSTOM_MIG_1G_10GB:
            total: 7
            max_unit: 7
            allocation_ratio: 1.0
        - CUSTOM_GPU_MILLI:
            total: 2000
            max_unit: 1000
            allocation_ratio: 1.0
    traits:
      additional:
        - CUSTOM_GPU_H100_80GB
        - CUSTOM_GPU_MIG_MODE
EOF
fi

manage() { "$nova_venv/bin/nova-manage" --config-file "$state/nova.conf" "$@" \
             >>"$state/nova-manage.log" 2>&1 || fail "nova-manage $* failed (see $state/nova-manage.log)"; }
: >"$state/nova-manage.log"
manage api_db sync
manage cell_v2 map_cell0 --database_connection "$cell0_db"
manage cell_v2 create_cell --name cell1 --database_connection "$cell1_db" --transport-url "$transport_url"
manage db sync
t_db=$(date +%s.%N)

# -- Nova: services --------------------------------------------------------------------------
start_service() {  # start_service NAME CONF
  (exec setsid "$nova_venv/bin/$1" --config-file "$2" --log-file "$state/$1.log" \
     </dev/null >>"$state/$1.log" 2>&1) &
  echo $! >"$state/$1.pid"
}
start_service nova-conductor "$state/nova.conf"
start_service nova-scheduler "$state/nova.conf"

fixed_port=""
for attempt in 1 2 3; do
  api_port=$(free_port)
  nova_url="http://127.0.0.1:$api_port/v2.1"
  # nova parses sys.argv with oslo.config: gunicorn gets no arguments, only ./gunicorn.conf.py
  cat >"$state/gunicorn.conf.py" <<EOF
wsgi_app = "nova.wsgi.osapi_compute:application"
bind = "127.0.0.1:$api_port"
workers = 1
worker_class = "gthread"
threads = 4
timeout = 120
errorlog = "$state/nova-api.log"
EOF
  (cd "$state" && OS_NOVA_CONFIG_DIR=$state exec setsid "$nova_venv/bin/gunicorn" \
     </dev/null >>"$state/nova-api.log" 2>&1) &
  echo $! >"$state/nova-api.pid"
  wait_http "$nova_url/" "$state/nova-api.pid" 90 && break
  stop_pid nova-api INT
  grep -q "Address already in use" "$state/nova-api.log" || fail "nova-api did not answer on $nova_url"
  [ "$attempt" = 3 ] && fail "nova-api did not answer on $nova_url"
done

# nova-compute pings the conductor once at start and waits 10 s when nobody answers (its
# message to a queue not yet declared is dropped): start it when the conductor consumes
for _ in $(seq 1 600); do
  grep -q "Starting conductor node" "$state/nova-conductor.log" && break
  kill -0 "$(cat "$state/nova-conductor.pid")" 2>/dev/null || fail "nova-conductor exited"
  sleep 0.1
done
sleep 0.5
start_service nova-compute "$state/nova-compute.conf"

# ready = the compute node is in Placement with the GPU inventory, and mapped to cell1
for s in nova-conductor nova-scheduler nova-compute; do
  kill -0 "$(cat "$state/$s.pid")" 2>/dev/null || fail "$s exited"
done
node_uuid=$(python3 - "$placement_url" "$host" <<'EOF'
import json, sys, time, urllib.request
url, host = sys.argv[1], sys.argv[2]
def get(path):
    req = urllib.request.Request(url + path, headers={"X-Auth-Token": "admin",
                                 "OpenStack-API-Version": "placement 1.39"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    rps = get(f"/resource_providers?name={host}")["resource_providers"]
    if rps:
        inv = get(f"/resource_providers/{rps[0]['uuid']}/inventories")["inventories"]
        if "VCPU" in inv and any(rc.startswith("CUSTOM_") for rc in inv):
            print(rps[0]["uuid"]); sys.exit(0)
    time.sleep(0.5)
sys.exit(1)
EOF
) || fail "nova-compute did not register $host with its GPU inventory in Placement within 120 s"
mapped=""
for _ in $(seq 1 20); do
  manage cell_v2 discover_hosts --verbose
  if grep -q "host mapping for compute host '$host'" "$state/nova-manage.log"; then mapped=1; break; fi
  sleep 1
done
[ -n "$mapped" ] || fail "compute host $host was not mapped to cell1 (nova-manage cell_v2 discover_hosts)"
t_ready=$(date +%s.%N)

secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
echo "$nova_url" >"$state/url"
cat >"$state/env" <<EOF
NOVA_URL=$nova_url
GLANCE_URL=$glance_url
NOVA_IMAGE_ID=$image_id
NOVA_HOST=$host
NOVA_NODE_UUID=$node_uuid
PLACEMENT_URL=$placement_url
TRANSPORT_URL=$transport_url
NOVA_DB=$db
NOVA_START_S=$(secs "$t_installed" "$t_ready")
NOVA_INSTALL_S=$(secs "$t_start" "$t_installed")
EOF
log "started in $(secs "$t_installed" "$t_ready") s (RabbitMQ $(secs "$t_installed" "$t_rabbit")," \
    "Glance $(secs "$t_rabbit" "$t_glance"), Nova DB $(secs "$t_glance" "$t_db")," \
    "Nova services $(secs "$t_db" "$t_ready")); install/check $(secs "$t_start" "$t_installed") s"
log "Nova at $nova_url (Glance $glance_url, image $image_id, host $host), state in $state"
echo "$nova_url"
