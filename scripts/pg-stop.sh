#!/usr/bin/env bash
# Stop and remove the PostgreSQL started by scripts/pg-start.sh STATE_DIR. Safe to call twice.
set -uo pipefail
state=${1:?usage: pg-stop.sh STATE_DIR}
[ -f "$state/datadir" ] || exit 0
data=$(cat "$state/datadir")
pg_ctl=$(cat "$state/pg_ctl" 2>/dev/null || echo pg_ctl)
if [ -d "$data/db" ]; then
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$pg_ctl" -D "$data/db" -m immediate -w stop >/dev/null 2>&1
  else
    "$pg_ctl" -D "$data/db" -m immediate -w stop >/dev/null 2>&1
  fi
fi
case "$data" in /tmp/gpuplane-pg.*) rm -rf "$data" ;; esac
rm -f "$state/datadir" "$state/url" "$state/pg_ctl"
