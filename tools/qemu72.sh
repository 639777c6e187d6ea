#!/usr/bin/env bash
# Keep Debian 12's own QEMU 7.2 beside the system QEMU (10, from bookworm-backports): the
# tests cover a QEMU without vfio-pci's vf-token, the refusal path. The three packages of
# bookworm's 7.2 (the binary, its TCG accelerator module, its firmware) are downloaded
# from Debian's archive and unpacked into the cache; a wrapper points the binary at its
# own modules (QEMU_MODULE_DIR) and firmware (-L) and execs it, so it keeps its pid.
# Prints the wrapper's path; cached, so a second run downloads nothing.
#   tools/qemu72.sh       (VFIOCTL_CACHE, default ~/.cache/vfioctl-vmtest)
set -euo pipefail
cache=${VFIOCTL_CACHE:-$HOME/.cache/vfioctl-vmtest}/qemu-7.2
wrapper=$cache/bin/qemu-system-x86_64
if [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
  echo "$wrapper"
  exit 0
fi
mkdir -p "$cache/debs"
cd "$cache/debs"
for pkg in qemu-system-x86 qemu-system-common qemu-system-data; do
  # bookworm's own version (not bookworm-backports')
  ver=$(apt-cache madison "$pkg" | awk -F'|' '$3 ~ /bookworm(-security)?\/main/ && $2 !~ /bpo/ { gsub(/ /, "", $2); print $2; exit }')
  [ -n "$ver" ] || { echo "qemu72: no bookworm version of $pkg in apt's lists" >&2; exit 1; }
  ls ./"${pkg}"_*.deb >/dev/null 2>&1 || apt-get download -q "$pkg=$ver" 2>&1 | grep -v unsandboxed >&2 || true
  ls ./"${pkg}"_*.deb >/dev/null 2>&1 || { echo "qemu72: could not download $pkg=$ver" >&2; exit 1; }
done
rm -rf "$cache/root"
for deb in ./*.deb; do
  dpkg-deb -x "$deb" "$cache/root"
done
mkdir -p "$cache/bin"
cat > "$wrapper.tmp" <<WRAP
#!/bin/sh
# Debian 12's QEMU 7.2, unpacked by tools/qemu72.sh; its own modules and firmware.
QEMU_MODULE_DIR=$cache/root/usr/lib/x86_64-linux-gnu/qemu
export QEMU_MODULE_DIR
exec $cache/root/usr/bin/qemu-system-x86_64 -L $cache/root/usr/share/qemu "\$@"
WRAP
chmod 0755 "$wrapper.tmp"
mv "$wrapper.tmp" "$wrapper"
"$wrapper" --version >/dev/null
echo "$wrapper"
