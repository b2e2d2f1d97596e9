# ferrovol image: one binary for every role (node plugin, NFS controller, local resizer).
# Build: docker build -t ghcr.io/ferrovol/ferrovol:0.1.0 .
# scripts/image.sh builds the same image without a container engine: it reads the final stage's
# package list, setcap, USER, ENTRYPOINT and CMD from this file (tests/image_recipe.rs).

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protox compiles proto/csi.proto in build.rs, so no protoc is needed.
RUN cargo build --release --locked --bin ferrovol \
 && install -D -m 0755 target/release/ferrovol /out/ferrovol

FROM docker.io/library/debian:bookworm-slim
# Only the host tools the node plugin runs (docs/install.md, "Host tools"; tests/chart/consistency.rs keeps
# that list equal to the code): e2fsprogs (mkfs.ext4) and xfsprogs (mkfs.xfs). util-linux brings
# libblkid1 and libudev1, which the binary links. NFS mounts go through the kernel's own option
# parser (fsopen/fsconfig), so no mount.nfs is needed. libcap2-bin only sets the file capability
# below and is removed again.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      e2fsprogs xfsprogs util-linux libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ferrovol /usr/bin/ferrovol
# The NFS controller runs non-root with only NET_BIND_SERVICE (reserved source ports for servers
# that export "secure"). Kubernetes puts an added capability in the bounding set only; a non-root
# process gets it through this file capability, permitted only: the driver makes it effective
# itself (src/os/caps.rs). With the effective bit, exec would fail (EPERM) in every container
# that drops it, as the local resizer and node-loss controller do.
# That container allows privilege escalation (no_new_privs would void the file capability), so
# the image keeps no setuid or setgid file that could give it more.
RUN setcap cap_net_bind_service=+p /usr/bin/ferrovol \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y \
 && find / -xdev -type f -perm /6000 -exec chmod ug-s {} +
ENTRYPOINT ["/usr/bin/ferrovol"]
CMD ["serve"]
