#!/usr/bin/env bash
# Builds the images the real-node e2e runs, as one-layer OCI archives for
# `ctr -n k8s.io images import ARCHIVE`, without a container engine or a registry:
#
#   ferrovol               ferrovol.local/ferrovol:dev    Debian bookworm minbase with the packages,
#                                                         file capability, user, entrypoint and
#                                                         command the Dockerfile gives, and
#                                                         target/release/ferrovol
#   csi-provisioner        ferrovol.local/csi-provisioner:VERSION      the binaries
#   csi-resizer            ferrovol.local/csi-resizer:VERSION          scripts/e2e-build.sh
#   csi-snapshotter        ferrovol.local/csi-snapshotter:VERSION      builds (with cgo) on
#   snapshot-controller    ferrovol.local/snapshot-controller:VERSION  Debian's libc6 files
#   local-path-provisioner ferrovol.local/local-path-provisioner:VERSION   static binaries,
#   pause                  ferrovol.local/pause:dev                        nothing else
#   busybox                ferrovol.local/busybox:VERSION  Debian's busybox-static with its applet
#                                                         links (test pods, local-path helper pods)
#
# VERSION is the binary's version stamp from scripts/e2e-build.sh (busybox: the Debian package's
# upstream version). The Dockerfile is the one source for the ferrovol image: its apt-get install
# line less what it purges again, its setcap, USER, ENTRYPOINT and CMD (`--print-recipe` shows
# what is read; tests/image_recipe.rs checks it against the Dockerfile).
#
# Cache (FERROVOL_E2E_CACHE, default $HOME/.cache/ferrovol-e2e; archives in images/):
#  - the Debian rootfs (mmdebstrap) is kept per hash of its suite, sources and package list;
#  - every image but ferrovol is rebuilt only when its binary's stamp or the packer changes;
#  - the ferrovol image is rebuilt on every run from the current release binary
#    (FERROVOL_BINARY, default target/release/ferrovol; build it first).
# The layer is deterministic: entries sorted, mtimes 0, numeric owners.
#
# Usage: scripts/image.sh [NAME...]    (default: every image; run as root)
#        scripts/image.sh --print-recipe
# Prints one line per image (reference, archive, archive size, uncompressed layer size), writes
# images/refs ("NAME REFERENCE ARCHIVE" lines) and prints the images directory on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SUITE=bookworm
SOURCES=(
    "deb http://deb.debian.org/debian $SUITE main"
    "deb http://deb.debian.org/debian $SUITE-updates main"
    "deb http://deb.debian.org/debian-security $SUITE-security main"
)
# What debian:bookworm-slim (the Dockerfile's base) leaves out: docs but their copyright files,
# man and info pages, translations.
SLIM=(
    path-exclude=/usr/share/doc/* path-include=/usr/share/doc/*/copyright
    path-exclude=/usr/share/groff/* path-exclude=/usr/share/info/*
    path-exclude=/usr/share/linda/* path-exclude=/usr/share/lintian/overrides/*
    path-exclude=/usr/share/locale/* path-include=/usr/share/locale/locale.alias
    path-exclude=/usr/share/man/*
)
REGISTRY=ferrovol.local
ALL=(ferrovol csi-provisioner csi-resizer csi-snapshotter snapshot-controller
    local-path-provisioner pause busybox)

# The Dockerfile with its continuation lines joined.
dockerfile() { sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta' Dockerfile; }
# apt_words VERB: the package names after the first `apt-get VERB`, up to the next `&&`.
apt_words() {
    dockerfile | grep -o "apt-get $1[^&]*" | head -1 | tr -s ' \t' '\n' |
        grep -v -e '^-' -e '^apt-get$' -e "^$1\$" -e '^$' || true
}
packages() { comm -23 <(apt_words install | sort -u) <(apt_words purge | sort -u); }
capability() { dockerfile | grep -o 'setcap [^ ]* /usr/bin/ferrovol' | awk '{print $2}'; }
instruction() { sed -n "s/^$1 //p" Dockerfile | tail -1; }

if [ "${1:-}" = --print-recipe ]; then
    echo "suite: $SUITE"
    echo "packages: $(packages | tr '\n' ' ' | sed 's/ $//')"
    echo "capability: $(capability)"
    echo "user: $(instruction USER)"
    echo "entrypoint: $(instruction ENTRYPOINT)"
    echo "cmd: $(instruction CMD)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/image.sh: mmdebstrap, setcap and the layers' owners need root" >&2
    exit 1
fi
for tool in mmdebstrap setcap getcap python3 tar jq; do
    command -v "$tool" >/dev/null || {
        echo "scripts/image.sh: $tool is missing (scripts/e2e.sh installs it)" >&2
        exit 1
    }
done

CACHE=${FERROVOL_E2E_CACHE:-$HOME/.cache/ferrovol-e2e}
IMAGES=$CACHE/images
mkdir -p "$IMAGES"
BIN=$(scripts/e2e-build.sh | tail -1)
PACK=(nice -n 10 python3 "$ROOT/scripts/oci-pack.py")
PACKER_HASH=$(sha256sum scripts/oci-pack.py | cut -c1-16)
WORK=$(mktemp -d "$IMAGES/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# remove_tree DIR: removes DIR and never anything outside its own filesystem. A killed
# mmdebstrap leaves /proc, /sys and /dev mounted inside its target: those are unmounted first
# (deepest first), and rm stays on DIR's filesystem whatever is left.
remove_tree() {
    local dir m
    [ -e "$1" ] || return 0
    dir=$(realpath "$1")
    awk '{print $5}' /proc/self/mountinfo | grep -E "^$dir(/|\$)" | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$dir"
}

# The Debian rootfs with the Dockerfile's packages, setuid and setgid bits cleared as the
# Dockerfile does; kept per hash of what makes it.
rootfs() {
    local pkgs key dir
    pkgs=$(packages | paste -sd, -)
    key=$(printf '%s\n' "$SUITE" minbase "${SOURCES[@]}" "${SLIM[@]}" "$pkgs" | sha256sum |
        cut -c1-16)
    dir=$IMAGES/rootfs-$key
    if [ ! -d "$dir" ]; then
        echo "== mmdebstrap $SUITE minbase + $pkgs" >&2
        remove_tree "$dir.partial"
        local opts=() o
        for o in "${SLIM[@]}"; do opts+=("--dpkgopt=$o"); done
        printf '%s\n' "${SOURCES[@]}" |
            nice -n 10 mmdebstrap --quiet --variant=minbase "${opts[@]}" --include="$pkgs" \
                "$SUITE" "$dir.partial" - >&2
        find "$dir.partial" -xdev -type f -perm /6000 -exec chmod ug-s {} +
        mv "$dir.partial" "$dir"
        # Earlier package lists' trees (and their libc6 trees) are not used again.
        local old
        for old in "$IMAGES"/rootfs-*; do
            case $old in "$dir"*) ;; *) remove_tree "$old" ;; esac
        done
    fi
    echo "$dir"
}

# The files of the rootfs's libc6 package, for the Go binaries built with cgo.
libc() {
    local base=$1 dir
    dir=$base.libc6
    if [ ! -d "$dir" ]; then
        remove_tree "$dir.partial"
        mkdir -p "$dir.partial"
        # The merged-/usr links first (lib -> usr/lib), so the files land where Debian has them.
        (cd "$base" && find . -maxdepth 1 -type l | tar -cf - -T -) | tar -xpf - -C "$dir.partial"
        mkdir -p "$dir.partial/usr/lib" "$dir.partial/usr/lib64"
        (cd "$base" && sed 's,^/,,' var/lib/dpkg/info/libc6:amd64.list |
            while read -r f; do [ -e "$f" ] && [ ! -d "$f" ] && echo "$f"; done |
            tar -cf - --no-recursion -T -) |
            tar -xpf - --keep-directory-symlink -C "$dir.partial"
        mkdir -p -m 1777 "$dir.partial/tmp"
        mv "$dir.partial" "$dir"
    fi
    echo "$dir"
}

# finish NAME REF SIZES: records the image and prints its line.
finish() {
    local archive=$IMAGES/$1.tar size uncompressed
    read -r size uncompressed <<<"$3"
    printf '%s %s %s\n' "$1" "$2" "$archive" >>"$WORK/refs"
    awk -v ref="$2" -v a="$archive" -v s="$size" -v u="$uncompressed" 'BEGIN {
        printf "%-50s %s  archive %.1f MiB, uncompressed %.1f MiB\n", ref, a, s / 1048576, u / 1048576
    }'
}

# cached NAME REF KEY: the archive is there and was made from KEY; prints its line if so.
cached() {
    local archive=$IMAGES/$1.tar
    [ -f "$archive" ] && [ "$(cat "$IMAGES/.$1.key" 2>/dev/null)" = "$3" ] || return 1
    finish "$1" "$2" "$(cat "$IMAGES/.$1.sizes")"
}

# pack NAME REF KEY ENTRYPOINT CMD ROOT...
pack() {
    local name=$1 ref=$2 key=$3 entrypoint=$4 cmd=$5 sizes
    shift 5
    rm -f "$IMAGES/.$name.key"
    sizes=$("${PACK[@]}" --name "$ref" --out "$IMAGES/$name.tar" \
        --entrypoint "$entrypoint" --cmd "$cmd" "$@")
    echo "$sizes" >"$IMAGES/.$name.sizes"
    echo "$key" >"$IMAGES/.$name.key"
    finish "$name" "$ref" "$sizes"
}

# binary_image NAME BASE DEST [TAG]: the binary NAME of $BIN at DEST, on top of BASE (or of
# nothing), tagged with its version stamp or TAG.
binary_image() {
    local name=$1 base=$2 dest=$3 version key stage
    version=$(cat "$BIN/.$name.version")
    key="$version $PACKER_HASH $base"
    local ref=$REGISTRY/$name:${4:-$version}
    cached "$name" "$ref" "$key" && return 0
    stage=$WORK/$name
    install -D -m 0755 "$BIN/$name" "$stage$dest"
    pack "$name" "$ref" "$key" "[\"$dest\"]" null ${base:+"$base"} "$stage"
}

ferrovol_image() {
    local bin=${FERROVOL_BINARY:-$ROOT/target/release/ferrovol} base stage user config
    [ -x "$bin" ] || {
        echo "scripts/image.sh: $bin is missing: cargo build --release --bin ferrovol" >&2
        exit 1
    }
    base=$(rootfs)
    stage=$WORK/ferrovol
    install -D -m 0755 "$bin" "$stage/usr/bin/ferrovol"
    setcap "$(capability)" "$stage/usr/bin/ferrovol"
    user=$(instruction USER)
    pack ferrovol "$REGISTRY/ferrovol:dev" - "$(instruction ENTRYPOINT)" \
        "$(instruction CMD)" ${user:+--user "$user"} "$base" "$stage"
    # The capability must come out of the layer as it went in.
    local archive=$IMAGES/ferrovol.tar manifest layer
    manifest=$(tar -xOf "$archive" index.json | jq -r '.manifests[0].digest')
    layer=$(tar -xOf "$archive" "blobs/sha256/${manifest#sha256:}" | jq -r '.layers[0].digest')
    mkdir "$WORK/check"
    tar -xOf "$archive" "blobs/sha256/${layer#sha256:}" |
        tar -xz --xattrs --xattrs-include=security.capability -C "$WORK/check" usr/bin/ferrovol
    local got want
    got=$(getcap "$WORK/check/usr/bin/ferrovol" | awk '{print $2}')
    want=$(getcap "$stage/usr/bin/ferrovol" | awk '{print $2}')
    [ -n "$want" ] && [ "$got" = "$want" ] || {
        echo "scripts/image.sh: the layer's usr/bin/ferrovol has capability '$got', not '$want'" >&2
        exit 1
    }
}

busybox_image() {
    local version key stage ref link
    version=$(dpkg-query -W -f '${Version}' busybox-static)
    key="$version $PACKER_HASH"
    version=${version#*:}
    ref=$REGISTRY/busybox:${version%%-*}
    cached busybox "$ref" "$key" && return 0
    stage=$WORK/busybox
    install -D -m 0755 /bin/busybox "$stage/bin/busybox"
    for link in $(/bin/busybox --list-full); do
        [ -e "$stage/$link" ] && continue
        mkdir -p "$stage/$(dirname "$link")"
        ln -s /bin/busybox "$stage/$link"
    done
    mkdir -p -m 1777 "$stage/tmp"
    mkdir -p "$stage/etc" "$stage/root"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        >"$stage/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
    pack busybox "$ref" "$key" null '["sh"]' "$stage"
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
for name in "${names[@]}"; do
    case $name in
    ferrovol) ferrovol_image ;;
    csi-provisioner | csi-resizer | csi-snapshotter | snapshot-controller)
        base=$(rootfs)
        base=$(libc "$base")
        binary_image "$name" "$base" "/$name"
        ;;
    local-path-provisioner) binary_image "$name" "" /usr/bin/local-path-provisioner ;;
    pause) binary_image pause "" /pause dev ;;
    busybox) busybox_image ;;
    *)
        echo "scripts/image.sh: no image $name (images: ${ALL[*]})" >&2
        exit 1
        ;;
    esac
done
# refs keeps earlier runs' lines for the images this run did not touch.
touch "$IMAGES/refs"
awk 'NR == FNR { seen[$1] = 1; print; next } !($1 in seen)' "$WORK/refs" "$IMAGES/refs" \
    | sort >"$WORK/refs.all"
mv "$WORK/refs.all" "$IMAGES/refs"
echo "$IMAGES"
