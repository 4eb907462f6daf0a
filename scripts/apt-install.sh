#!/usr/bin/env bash
# Install Debian packages when running as root on a Debian/Ubuntu system; otherwise say what to do.
set -euo pipefail
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@"
else
  echo "please install: $*" >&2
  exit 1
fi
