#!/usr/bin/env bash
# The nginx configs of bench/bench.py's nginx systems, written by
# tests/nginx_lib.sh's nginx_conf (the one way nginx configs are written):
# the rktls module loaded in both (the same nginx binary and process image;
# only the listener differs), pid, logs and temp paths under T/nginx.
#
#   bench/nginx_conf.sh T FILE HTTP_BODY     (NGINX_LOG_LEVEL: default warn)
set -euo pipefail
cd "$(dirname "$0")/.."
T=$1
NGINX_LOG_LEVEL=${NGINX_LOG_LEVEL:-warn}
mkdir -p "$T"
# shellcheck source=tests/nginx_lib.sh
. tests/nginx_lib.sh
nginx_conf "$2" "$3"
