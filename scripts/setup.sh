#!/usr/bin/env bash
# Installs what phasemap needs on a fresh machine: nats-server (>= 2.9, JetStream) when it is missing,
# python3 with numpy when missing (for the checkpoint tests), OpenBLAS when missing (faster matmuls), then the npm dependencies and the build (`npm ci` runs `prepare` = tsc).
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
# The trainer's matmuls on the wasm backend run on OpenBLAS when it is there (~2x faster steps; the
# native addon opens it at run time, worker/trainer/native/blas.c); without it they stay in wasm.
# The pthreads build: slots call it concurrently, which the sequential build is not safe for (it is
# then called under a lock, one product at a time).
if ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: OpenBLAS not found; installing it (libopenblas0-pthread)" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas0-pthread >/dev/null
  else
    echo "setup: OpenBLAS (libopenblas.so.0) not found: training runs, with slower matmuls; install OpenBLAS to speed it up" >&2
  fi
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build --silent
fi
