#!/usr/bin/env bash
# Installs what phasemap needs on a fresh machine: nats-server (>= 2.9, JetStream) when it is missing,
# python3 with numpy when missing (for the checkpoint tests), OpenBLAS when missing (faster matmuls), then the npm dependencies and the build (`npm ci` runs `prepare` = tsc).
set -euo pipefail
cd "$(dirname "$0")/.."
# apt_install PKG…: Debian's packages, as root or through sudo; without either, says what to install and stops.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "setup: cannot install $* (not root, no sudo): as root run 'apt-get install $*', then run this again" >&2
      exit 1
    fi
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if ! command -v nats-server >/dev/null 2>&1; then
  echo "setup: nats-server not found; installing it" >&2
  if command -v apt-get >/dev/null 2>&1; then
    apt_install nats-server
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
    apt_install python3 python3-numpy
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
# (grep reads all of ldconfig's output: with `grep -q` it could exit first, and under pipefail the
# SIGPIPE of ldconfig made the test fail now and then, re-installing for nothing.)
if ! ldconfig -p 2>/dev/null | grep 'libopenblas\.so\.0' >/dev/null; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: OpenBLAS not found; installing it (libopenblas0-pthread)" >&2
    apt_install libopenblas0-pthread
  else
    echo "setup: OpenBLAS (libopenblas.so.0) not found: training runs, with slower matmuls; install OpenBLAS to speed it up" >&2
  fi
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build --silent
fi
