#!/usr/bin/env bash
# Installs what phasemap needs on a fresh machine: nats-server (>= 2.9, JetStream) when it is missing,
# python3 with numpy when missing (for the checkpoint tests), then the npm dependencies and the build (`npm ci` runs `prepare` = tsc).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nats-server >/dev/null 2>&1; then
  echo "setup: nats-server not found; installing it" >&2
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install nats-server
  else
    echo "setup: install nats-server >= 2.9 yourself (it must be on PATH), then run this again" >&2
    exit 1
  fi
fi
nats-server --version >&2
# The checkpoint tests recompute logged numbers with independent Python/NumPy code (test/recompute_checkpoint.py).
if ! python3 -c 'import numpy' >/dev/null 2>&1; then
  echo "setup: python3 with numpy not found; installing it" >&2
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-numpy >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install numpy
  else
    echo "setup: install python3 with numpy yourself (the checkpoint tests need it), then run this again" >&2
    exit 1
  fi
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build --silent
fi
