#!/usr/bin/env bash
# Build the real-kernel tier's initramfs: static busybox, the few modules needed to mount
# the host's / over virtio-9p, and vmtest/init.sh as /init. Nothing else: the guest runs
# the host's own userland (Python, the project's .venv, modprobe, lspci) from the 9p root,
# so the image stays ~2 MiB and builds in a second.
#
#   vmtest/mkinitramfs.sh KVER OUTPUT.gz
#   vmtest/mkinitramfs.sh builtin OUTPUT.gz   (a kernel with those built in: no modules)
set -euo pipefail
kver=$1
output=$2
here=$(cd "$(dirname "$0")" && pwd)

busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ! file -b "$(readlink -f "$busybox")" | grep -q 'statically linked'; then
  echo "mkinitramfs: need a static busybox (Debian: busybox-static)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,proc,sys,dev,host,lib/modules}
cp "$(readlink -f "$busybox")" "$work/bin/busybox"
install -m 0755 "$here/init.sh" "$work/init"

# Modules (with their dependencies, in load order) for virtio-pci, 9p and overlayfs.
# Debian builds them as modules; anything built in simply does not show up here.
for mod in virtio_pci 9pnet_virtio 9p overlay; do
  [ "$kver" = builtin ] && break
  modprobe -S "$kver" --show-depends "$mod" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' > "$work/modlist"
n=0
while read -r ko; do
  n=$((n + 1))
  base=$(printf '%02d-%s' "$n" "$(basename "$ko")")
  case $ko in
    *.xz) xz -dc "$ko" > "$work/lib/modules/${base%.xz}" ;;
    *.zst) zstd -dcq "$ko" > "$work/lib/modules/${base%.zst}" ;;
    *) cp "$ko" "$work/lib/modules/$base" ;;
  esac
done < "$work/modlist"
rm "$work/modlist"

mkdir -p "$(dirname "$output")"
(cd "$work" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$output.tmp"
mv "$output.tmp" "$output"
echo "vmtest: built $output ($(du -h "$output" | cut -f1); modules: $(ls "$work/lib/modules" | tr '\n' ' '))"
