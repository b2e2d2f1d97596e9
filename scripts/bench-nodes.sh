#!/usr/bin/env bash
# PVC-to-pod-Ready latency (p50/p95, 1 pod and 30 pods at once) of ferrovol's hostpath class
# against local-path-provisioner v0.0.30, and the node plugin's VmRSS with 30 volumes published,
# on the real nodes of the e2e suite's real-node phase (tests/e2e/real_bench.sh). Not a pass/fail
# test: it prints a table and whether ferrovol's p50 at 30 pods is at least 3x faster.
# Usage: scripts/bench-nodes.sh   (as root; builds what scripts/e2e.sh builds)
set -euo pipefail
cd "$(dirname "$0")/.."
FERROVOL_E2E_PHASES=real FERROVOL_E2E_BENCH=1 FERROVOL_E2E_REAL_SCENARIOS=0 exec scripts/e2e.sh
