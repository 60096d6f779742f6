#!/usr/bin/env bash
# Install h2load (the HTTP/2 load generator `bench/serving.py` drives gRPC with) from Debian's packages
# (nghttp2-client), when absent. Idempotent. Prints nothing but progress; `make bench` calls it.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v h2load >/dev/null 2>&1; then
  echo "h2load: installing from Debian's packages (nghttp2-client)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
fi
command -v h2load >/dev/null 2>&1 || { echo "h2load: still not found after installing nghttp2-client" >&2; exit 1; }
echo "h2load: ready ($(h2load --version 2>/dev/null | head -n 1))"
