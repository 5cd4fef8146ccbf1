#!/bin/bash
# Stage 2 of the nested L1 image (qemu-runner/src/nested/image.rs): from the
# stage-1 root file system, the read-only ext4 image with the L1 init, a small
# busybox initramfs (virtio_blk + ext4 and their dependencies), and the kernel.
# Usage: build-image.sh ROOTFS OUT BUSYBOX INITRAMFS_INIT L1_INIT
# Writes OUT/{vmlinuz,initrd.img,rootfs.ext4,kernel-release}.
set -euo pipefail
root=$1 out=$2 busybox=$3 iinit=$4 linit=$5
mkdir -p "$out"
kver=$(ls "$root/lib/modules" | head -n1)
[[ -n "$kver" && -f "$root/boot/vmlinuz-$kver" ]] || { echo "no kernel in $root" >&2; exit 1; }
grep -qx CONFIG_KVM_HYPERV=y "$root/boot/config-$kver" || { echo "kernel $kver lacks CONFIG_KVM_HYPERV" >&2; exit 1; }
grep -qx CONFIG_KVM_XEN=y "$root/boot/config-$kver" || { echo "kernel $kver lacks CONFIG_KVM_XEN" >&2; exit 1; }
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "$kver" >"$out/kernel-release"

# The L1 init and the mount point of the run's share.
install -m 0755 "$linit" "$root/sbin/pvops-l1-init"
install -m 0755 "$busybox" "$root/usr/local/bin/busybox"
mkdir -p "$root/share"

# initramfs: busybox, the modules to reach the ext4 root, an init.
ird=$(mktemp -d "$out/initramfs.XXXXXX")
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$busybox" "$ird/bin/busybox"
install -m 0755 "$iinit" "$ird/init"
: >"$ird/modules.order"
for want in virtio_blk ext4; do chroot "$root" modprobe -S "$kver" --show-depends "$want"; done |
    awk '$1 == "insmod" { print $2 }' | while read -r m; do
        name=$(basename "$m")
        name=${name%.xz}
        if [[ "$m" == *.xz ]]; then xz -dc "$root$m" >"$ird/lib/modules/$name"; else cp "$root$m" "$ird/lib/modules/$name"; fi
        grep -qx "$name" "$ird/modules.order" || echo "$name" >>"$ird/modules.order"
    done
[[ -s "$ird/modules.order" ]] || { echo "no modules for virtio_blk/ext4 in $kver" >&2; exit 1; }
(cd "$ird" && find . | cpio -o -H newc --quiet) | gzip -1 >"$out/initrd.img"
rm -rf "$ird"

# The root file system, read-only at run time.
size_mb=$(( $(du -sm "$root" | cut -f1) * 5 / 4 + 64 ))
mkfs.ext4 -q -F -L pvops-l1 -d "$root" "$out/rootfs.ext4" "${size_mb}M"
