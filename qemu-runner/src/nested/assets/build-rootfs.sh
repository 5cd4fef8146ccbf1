#!/bin/bash
# Stage 1 of the nested L1 image (qemu-runner/src/nested/image.rs): a Debian
# bookworm minbase root file system with the bookworm-backports kernel (6.12,
# CONFIG_KVM_HYPERV, CONFIG_KVM_XEN) and QEMU (10.0.x; >= 8.0 emulates Xen).
# Usage: build-rootfs.sh OUT MIRROR SUITE BACKPORTS PACKAGES...
# Writes OUT/rootfs and OUT/versions. Needs root and debootstrap.
set -euo pipefail
out=$1 mirror=$2 suite=$3 backports=$4
shift 4
root="$out/rootfs"
mkdir -p "$out"
echo "nested-image: debootstrap --variant=minbase $suite ($mirror)"
debootstrap --variant=minbase --include=kmod "$suite" "$root" "$mirror"
echo "deb $mirror $backports main" >"$root/etc/apt/sources.list.d/backports.list"
# No initramfs-tools image of Debian's: the runner builds its own, small one.
mkdir -p "$root/etc/initramfs-tools/conf.d"
export DEBIAN_FRONTEND=noninteractive INITRD=No
chroot "$root" apt-get -q update
echo "nested-image: installing $* from $backports"
chroot "$root" apt-get -q install -y --no-install-recommends -t "$backports" "$@"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/boot/initrd.img*
chroot "$root" dpkg-query -W "$@" >"$out/versions"
