#!/usr/bin/env bash
# One command on a fresh machine: install what is missing, then run sweeps/quickstart.yaml on the
# embedded nats-server. Extra arguments go to `phasemap run` (e.g. --out DIR, --slots N).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/orchestrator/cli.js run sweeps/quickstart.yaml "$@"
