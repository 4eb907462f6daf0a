#!/usr/bin/env bash
# Run a command with GPUPLANE_TEST_PG_URL pointing at a PostgreSQL server.
# Uses the given GPUPLANE_TEST_PG_URL when set; otherwise starts a throwaway server
# (scripts/pg-start.sh) and stops it when the command ends, whatever its outcome.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${GPUPLANE_TEST_PG_URL:-}" ]; then
  exec "$@"
fi
state=$(mktemp -d /tmp/gpuplane-pgstate.XXXXXX)
cleanup() { "$here/pg-stop.sh" "$state"; rm -rf "$state"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
GPUPLANE_TEST_PG_URL=$("$here/pg-start.sh" "$state")
export GPUPLANE_TEST_PG_URL
echo "with-postgres: PostgreSQL at $GPUPLANE_TEST_PG_URL" >&2
set +e
"$@"
rc=$?
exit $rc
