#!/usr/bin/env bash
# vmtest/kernel/boot-check.sh: a quick standalone check that the built kernel boots on the
# tier's kind of machine (q35, intel-iommu with interrupt remapping, TCG) and has what the
# tier needs built in: /dev/iommu, the vfio cdev, igb SR-IOV with igbvf, NVMe, e1000e, 9p and
# overlayfs. Not the tier: a busybox initramfs, no host root. Prints the guest's "check:"
# lines; exits 0 only if the guest reported every expected fact.
#
# Usage: vmtest/kernel/boot-check.sh [BZIMAGE]   (default: what build.sh prints)
# VMTEST_LOCK=FILE: hold flock(FILE) around the QEMU boot only (the build, if any, runs first).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kernel=${1:-$("$here/build.sh" | tail -n 1)}
[[ -s $kernel ]] || { echo "boot-check: error: no kernel at '$kernel'" >&2; exit 1; }
busybox=$(command -v busybox) || { echo "boot-check: error: no busybox; apt-get install busybox-static" >&2; exit 1; }
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' \
  || { echo "boot-check: error: $busybox is not static; apt-get install busybox-static" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/bin" "$tmp/root/proc" "$tmp/root/sys" "$tmp/root/dev"
cp "$busybox" "$tmp/root/bin/busybox"
cat > "$tmp/root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "check: $*"; }
say "uname -r: $(uname -r)"
say "ls: $(ls -d /dev/iommu /dev/vfio/vfio 2>&1 | tr '\n' ' ')"
say "filesystems: $(grep -wE '9p|overlay|tmpfs|devtmpfs' /proc/filesystems | awk '{print $NF}' | tr '\n' ' ')"
say "iommu groups: $(ls /sys/kernel/iommu_groups | wc -l)"
say "modules.builtin lines: none expected in the initramfs; modules loaded: $(cat /proc/modules | wc -l)"
pci() {
  for d in /sys/bus/pci/devices/*; do
    drv=$(readlink "$d/driver" 2>/dev/null); drv=${drv##*/}
    grp=$(readlink "$d/iommu_group" 2>/dev/null); grp=${grp##*/}
    say "pci ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") driver=${drv:-none} group=${grp:-none}"
  done
}
pci
for d in /sys/bus/pci/devices/*; do
  case "$(cat "$d/vendor"):$(cat "$d/device")" in
    0x8086:0x10c9) igb=$d ;;
    0x8086:0x10d3) e1000e=$d ;;
  esac
done
if [ -n "${igb:-}" ]; then
  say "igb sriov_totalvfs: $(cat "$igb/sriov_totalvfs")"
  echo 2 > "$igb/sriov_numvfs" && sleep 1
  say "igb sriov_numvfs: $(cat "$igb/sriov_numvfs")"
  for v in "$igb"/virtfn*; do
    t=$(readlink "$v"); drv=$(readlink "$v/driver"); say "igb VF ${t##*/} driver=${drv##*/}"
  done
fi
if [ -n "${e1000e:-}" ]; then
  a=${e1000e##*/}
  echo vfio-pci > "$e1000e/driver_override"
  echo "$a" > "$e1000e/driver/unbind"
  echo "$a" > /sys/bus/pci/drivers_probe
  drv=$(readlink "$e1000e/driver"); say "e1000e $a driver=${drv##*/}"
  say "vfio-dev: $(ls "$e1000e/vfio-dev" 2>&1)"
  say "ls /dev/vfio /dev/vfio/devices: $(ls /dev/vfio /dev/vfio/devices 2>&1 | tr '\n' ' ')"
fi
say "done"
poweroff -f
EOF
chmod +x "$tmp/root/init"
(cd "$tmp/root" && find . | cpio -o -H newc --quiet | gzip -1 > "$tmp/initrd.gz")

qemu=(qemu-system-x86_64 -machine q35 -accel tcg -cpu max -smp 1 -m 1G
  -nographic -no-reboot -nic none
  -device intel-iommu,intremap=on
  -device pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x12
  -device nvme,bus=rp1,serial=bootcheck0
  -device pcie-root-port,id=rp2,chassis=2,slot=2,addr=0x13
  -device igb,bus=rp2
  -device e1000e,addr=0x10
  -kernel "$kernel" -initrd "$tmp/initrd.gz"
  -append "console=ttyS0 intel_iommu=on iommu=pt panic=-1 rdinit=/init")
run() { timeout "${BOOT_CHECK_TIMEOUT:-300}" "${qemu[@]}" < /dev/null > "$tmp/console.log" 2>&1 || true; }
if [[ -n ${VMTEST_LOCK:-} ]]; then
  exec 8>"$VMTEST_LOCK"
  flock 8
fi
start=$SECONDS
run
grep -a '^check:' "$tmp/console.log" || true
echo "boot-check: $((SECONDS - start)) s under TCG" >&2
ok=1
for want in 'check: ls: /dev/iommu /dev/vfio/vfio' 'driver=vfio-pci' 'vfio-dev: vfio0' \
    'devices: vfio0' 'igb VF .* driver=igbvf' 'driver=nvme' 'check: done'; do
  grep -aq -- "$want" "$tmp/console.log" || { echo "boot-check: missing: $want" >&2; ok=0; }
done
if ((ok == 0)); then
  tail -n 40 "$tmp/console.log" >&2
  exit 1
fi
echo "boot-check: ok" >&2
