#!/usr/bin/env bash
# Runs the driver standalone on its embedded default (README's first command). The build links
# libudev and libblkid (device discovery), so their development packages are installed first
# when missing (Debian/Ubuntu, as root). Arguments go to `ferrovol serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -e /usr/include/libudev.h ] || need+=(libudev-dev)
[ -e /usr/include/blkid/blkid.h ] || need+=(libblkid-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]} (needed to build ferrovol)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
exec cargo run --release -- serve "$@"
