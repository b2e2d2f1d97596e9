#!/usr/bin/env bash
# Builds and runs `ferrovol serve` on a fresh Debian/Ubuntu machine: installs the system
# libraries the build links against (libudev and libblkid, found through pkg-config) when they
# are missing, then `cargo run --release -- serve "$@"`. Needs root (or sudo) only for the
# install, and only the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in pkg-config libudev-dev libblkid-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if command -v pkg-config >/dev/null && pkg-config --exists libudev blkid; then
    missing=()
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing build dependencies: ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
exec cargo run --release -- serve "$@"
