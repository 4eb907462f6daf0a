# Shell helpers the OpenStack service scripts (placement.sh, keystone.sh, nova.sh) source.
# They use the caller's $state (the instance folder).

# stop_pid NAME SIGNAL: stop the process whose pid is in $state/NAME.pid: SIGNAL, up to 5 s,
# then KILL; the pid file is removed.
stop_pid() {
  local name=$1 sig=$2 pid
  [ -f "$state/$name.pid" ] || return 0
  pid=$(cat "$state/$name.pid")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/$name.pid"
}

# drop_databases PYTHON: drop the databases listed in $state/pg-dropdb ("ADMIN_URL NAME...",
# written when the instance created them in an existing server) with PYTHON's psycopg2.
drop_databases() {
  local python=$1
  [ -f "$state/pg-dropdb" ] && [ -x "$python" ] || return 0
  "$python" - "$(cat "$state/pg-dropdb")" <<'PY' >/dev/null 2>&1 || true
import sys, psycopg2
admin, *names = sys.argv[1].split(" ")
conn = psycopg2.connect(admin); conn.autocommit = True
for name in names:
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
PY
  rm -f "$state/pg-dropdb"
}
