#!/usr/bin/env python3
"""Packs directory trees into a one-layer OCI image archive for `ctr images import`.

Usage: oci-pack.py --name REF --out ARCHIVE [--entrypoint JSON] [--cmd JSON] [--user USER]
                   ROOT...

The ROOTs are merged in order (a later ROOT's entry replaces an earlier one's) into one layer
tar: entries sorted, mtimes 0, numeric owners, no user or group names, so the same trees give
the same archive. The contents of dev/, proc/ and sys/ are left out (the runtime mounts them).
A file's `security.capability` xattr (a file capability set with setcap) is carried as a PAX
SCHILY.xattr record, which containerd applies when it unpacks the layer.
The archive holds oci-layout, index.json (the manifest named by the io.containerd.image.name
and org.opencontainers.image.ref.name annotations) and the blobs. Prints the archive's size
and the layer's uncompressed size in bytes.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile

CAPABILITY = "security.capability"
SKIP_CONTENTS = ("dev", "proc", "sys")
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def collect(roots):
    """arcname -> absolute source path, later roots winning."""
    entries = {}
    for root in roots:
        root = os.path.abspath(root)
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            if rel in SKIP_CONTENTS:
                dirnames.clear()
                filenames = []
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                arc = os.path.normpath(os.path.join(rel, name))
                entries[arc] = path
    return entries


def write_layer(entries, out):
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arc in sorted(entries):
            path = entries[arc]
            mode = os.lstat(path).st_mode
            if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                continue
            info = tar.gettarinfo(path, arcname=arc)
            info.mtime = 0
            info.uname = info.gname = ""
            if info.isreg():
                try:
                    cap = os.getxattr(path, CAPABILITY, follow_symlinks=False)
                except OSError:
                    cap = None
                if cap:
                    # Binary-safe: tarfile writes it back byte for byte.
                    value = cap.decode("utf-8", "surrogateescape")
                    info.pax_headers = {"SCHILY.xattr." + CAPABILITY: value}
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def blob(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def add_bytes(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", default="null")
    p.add_argument("--cmd", default="null")
    p.add_argument("--user", default="")
    p.add_argument("roots", nargs="+")
    a = p.parse_args()

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.out))) as tmp:
        blobs = os.path.join(tmp, "blobs")
        os.mkdir(blobs)
        layer_tar = os.path.join(tmp, "layer.tar")
        with open(layer_tar, "wb") as f:
            write_layer(collect(a.roots), f)
        uncompressed = os.path.getsize(layer_tar)
        diff_id = file_digest(layer_tar)
        layer_gz = os.path.join(tmp, "layer.tar.gz")
        with open(layer_tar, "rb") as src, open(layer_gz, "wb") as raw:
            # Level 6 (gzip's default): level 9 takes twice as long for 1% less.
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    gz.write(chunk)
        os.unlink(layer_tar)
        layer_digest = file_digest(layer_gz)
        os.rename(layer_gz, os.path.join(blobs, layer_digest.split(":")[1]))

        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [PATH]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        for key, value in (("Entrypoint", a.entrypoint), ("Cmd", a.cmd)):
            if json.loads(value) is not None:
                config["config"][key] = json.loads(value)
        if a.user:
            config["config"]["User"] = a.user
        config_bytes = canonical(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob(blobs, config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": os.path.getsize(os.path.join(blobs, layer_digest.split(":")[1])),
                }
            ],
        }
        manifest_bytes = canonical(manifest)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": manifest["mediaType"],
                    "digest": blob(blobs, manifest_bytes),
                    "size": len(manifest_bytes),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": a.name,
                        "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
        partial = a.out + ".partial"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            add_bytes(tar, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
            add_bytes(tar, "index.json", canonical(index))
            for name in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(info)
            for name in sorted(os.listdir(blobs)):
                path = os.path.join(blobs, name)
                info = tar.gettarinfo(path, arcname="blobs/sha256/" + name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        os.replace(partial, a.out)
    print(os.path.getsize(a.out), uncompressed)


if __name__ == "__main__":
    main()
