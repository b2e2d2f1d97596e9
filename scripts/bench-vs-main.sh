#!/usr/bin/env bash
# Runs `cargo bench --bench ops` with the release before the state journal (e1e2179)
# as the baseline driver: the bench starts both binaries on the same filesystem and measures
# them in the same interleaved rounds, so the new/old ratios survive a busy machine.
#
#   scripts/bench-vs-main.sh [extra cargo bench args...]
#
# Env: FERROVOL_BASELINE_REV (default e1e2179), FERROVOL_BASELINE_DIR (default
# /tmp/ferrovol-main: a detached git worktree with its own target dir, reused across runs),
# plus every FERROVOL_BENCH_* knob of benches/ops.rs (e.g. FERROVOL_BENCH_QUICK=1).
set -euo pipefail

rev="${FERROVOL_BASELINE_REV:-e1e2179}"
dir="${FERROVOL_BASELINE_DIR:-/tmp/ferrovol-main}"
repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

full_rev="$(git -C "$repo" rev-parse --verify "$rev^{commit}")"
if [ -d "$dir" ] && [ "$(git -C "$dir" rev-parse HEAD 2>/dev/null)" != "$full_rev" ]; then
    echo "bench-vs-main: $dir is not a worktree at $rev; remove it or set FERROVOL_BASELINE_DIR" >&2
    exit 2
fi
if [ ! -d "$dir" ]; then
    # A stale registration (directory deleted by hand, e.g. /tmp cleared) blocks `worktree add`.
    git -C "$repo" worktree prune
    git -C "$repo" worktree add --detach "$dir" "$full_rev"
fi

echo "bench-vs-main: building the baseline $rev in $dir" >&2
(cd "$dir" && cargo build --release --bin ferrovol --target-dir "$dir/target")
baseline_bin="$dir/target/release/ferrovol"
test -x "$baseline_bin"

echo "bench-vs-main: running the bench against $baseline_bin" >&2
cd "$repo"
FERROVOL_BENCH_BASELINE_BIN="$baseline_bin" \
    FERROVOL_BENCH_BASELINE_REV="$rev" \
    cargo bench --bench ops "$@"
