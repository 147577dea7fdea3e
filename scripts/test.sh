#!/usr/bin/env bash
# The test suite on a fresh machine: what scripts/setup.sh installs, plus Debian's chromium for the
# report's browser tests (driven by playwright-core; no browser is downloaded), then `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -x "${PHASEMAP_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "setup: chromium not found; installing Debian's chromium for the browser tests" >&2
  if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "setup: cannot install chromium (not root, no sudo): as root run 'apt-get install chromium', then run this again" >&2
      exit 1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: install chromium yourself and set PHASEMAP_CHROMIUM to its path, then run this again" >&2
    exit 1
  fi
fi
npm test
