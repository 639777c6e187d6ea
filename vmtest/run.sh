#!/usr/bin/env bash
# The real-kernel tier (`make test-vm`): boot Debian's kernel in QEMU (TCG, q35, emulated
# Intel IOMMU, the vmtest PCI topology incl. an SR-IOV NVMe PF), run tests/realkernel
# inside it with this checkout's .venv, and report pytest's verdict.
#
#   vmtest/run.sh                     run the tier; exit status = the guest's pytest's
#   vmtest/run.sh --update-fixtures   same, then copy the guest's snapshots into
#                                     tests/data/snapshots/ (review with git diff)
#   vmtest/run.sh -- -k sriov -x      extra arguments after -- go to pytest in the guest
#
# Environment: VMTEST_OUT (results dir, default vmtest/out), VMTEST_CACHE (initramfs
# cache, default .vmtest-cache), VMTEST_STALL (seconds without a new console line after
# which the VM counts as hung, default 600), VMTEST_TIMEOUT (a last-resort cap on the
# whole VM, default 3600), VMTEST_MEM (default 1G), VMTEST_SMP (default 2), KVER
# (default: newest in /boot). A loaded machine makes the tier slower, never red: a hang
# is found by a lack of progress (the guest's pytest prints a line per test), not by the
# total time.
# See vmtest/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

update_fixtures=0
pytest_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --update-fixtures) update_fixtures=1 ;;
    --) shift; pytest_args=("$@"); break ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "vmtest: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# -- Can this machine run the tier at all? Only a missing QEMU or kernel skips it. ---------
qemu=$(command -v qemu-system-x86_64 || true)
if [ -z "${KVER:-}" ]; then
  KVER=$(for k in /boot/vmlinuz-*; do [ -r "$k" ] && [ -d "/lib/modules/${k#/boot/vmlinuz-}" ] \
           && echo "${k#/boot/vmlinuz-}"; done | sort -V | tail -1)
fi
kernel=/boot/vmlinuz-${KVER:-none}
if [ -z "$qemu" ] || [ ! -r "$kernel" ] || [ ! -d "/lib/modules/$KVER" ]; then
  echo "vmtest: SKIPPED: this machine cannot run the real-kernel tier (needs qemu-system-x86_64" \
       "and a kernel in /boot with modules; Debian: tools/setup.sh --test as root)"
  exit 0
fi

python=$repo/.venv/bin/python
if [ ! -x "$python" ]; then
  echo "vmtest: $python is missing: run tools/setup.sh --test first" >&2
  exit 2
fi
out=${VMTEST_OUT:-$repo/vmtest/out}
cache=${VMTEST_CACHE:-$repo/.vmtest-cache}
timeout_s=${VMTEST_TIMEOUT:-3600}
stall_s=${VMTEST_STALL:-600}
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
# The paths travel on the guest's kernel command line, which splits at spaces.
for p in "$out" "$repo"; do
  case $p in *[[:space:]]*) echo "vmtest: path '$p' contains whitespace; use another checkout or VMTEST_OUT" >&2; exit 2 ;; esac
done

# -- The initramfs, rebuilt when its inputs or the kernel change. ---------------------------
key=$(cat "$here/mkinitramfs.sh" "$here/init.sh" | sha256sum | cut -c1-12)
initrd=$cache/initrd-$KVER-$key.gz
if [ ! -s "$initrd" ]; then
  rm -f "$cache"/initrd-*.gz
  "$here/mkinitramfs.sh" "$KVER" "$initrd"
fi

# -- Results directory: shared read-write with the guest over 9p. ---------------------------
rm -rf "$out/snapshots" "$out/facts"
rm -f "$out"/{guest-rc,summary.txt,junit.xml,dmesg.txt,console.log,pytest-args,qemu.pid,vm-rc,stalled}
printf '%s\n' ${pytest_args[@]+"${pytest_args[@]}"} > "$out/pytest-args"

# -- The machine. Guest buses (see vmtest/README.md and tests/realkernel/topology.py):
# 00 root complex | 01 NVMe SR-IOV PF (+VFs) | 02 e1000e | 03 PCIe-to-PCI bridge
# -> 04 e1000 + virtio-rng | 05 switch upstream -> 06 two downstream ports
# -> 07 virtio-rng, 08 e1000e. The two 9p devices take the first free root-bus slots.
topology=(
  -device e1000e,addr=0x10
  -device virtio-net-pci,addr=0x11.0,multifunction=on
  -device virtio-rng-pci,addr=0x11.1
  -device pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x12
  -device nvme-subsys,id=subsys0,nqn=vmtest-subsys0
  # all three sriov_* properties are needed for QEMU 7.2's NVMe to offer VFs
  -device nvme,id=nvme0,bus=rp1,serial=vmtestpf0,subsys=subsys0,sriov_max_vfs=4,sriov_vq_flexible=8,sriov_vi_flexible=4
  -device pcie-root-port,id=rp2,chassis=2,slot=2,addr=0x13
  -device e1000e,bus=rp2
  -device pcie-root-port,id=rp3,chassis=3,slot=3,addr=0x14
  -device pcie-pci-bridge,id=br1,bus=rp3
  -device e1000,bus=br1,addr=1
  -device virtio-rng-pci,bus=br1,addr=2
  -device pcie-root-port,id=rp4,chassis=4,slot=4,addr=0x15
  -device x3130-upstream,id=up1,bus=rp4
  -device xio3130-downstream,id=dn1,bus=up1,chassis=5,slot=0
  -device xio3130-downstream,id=dn2,bus=up1,chassis=6,slot=1
  -device virtio-rng-pci,bus=dn1
  -device e1000e,bus=dn2
)
qemu_argv=(
  "$qemu" -machine q35 -accel tcg -cpu max -smp "${VMTEST_SMP:-2}" -m "${VMTEST_MEM:-1G}"
  -nodefaults -no-reboot -display none -monitor none -serial stdio
  -kernel "$kernel" -initrd "$initrd"
  -append "console=ttyS0 quiet panic=-1 intel_iommu=on iommu=pt vmtest.out=$out vmtest.python=$python vmtest.runner=$here/guest/runner.py"
  # intel-iommu before any PCI device, so that every device gets an IOMMU address space
  -device intel-iommu,intremap=on
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
  -fsdev local,id=out,path="$out",security_model=none,multidevs=remap
  -device virtio-9p-pci,fsdev=out,mount_tag=out
  "${topology[@]}"
)

# -- Boot, stream the serial console with elapsed seconds, watch for a stall. -------------
echo "vmtest: booting $KVER under TCG (hung after ${stall_s}s without output; cap ${timeout_s}s); results in $out"
start=$EPOCHREALTIME
start_us=${start/./}
: > "$out/console.log"
(
  set +e
  timeout -k 10 "$timeout_s" "${qemu_argv[@]}" -pidfile "$out/qemu.pid" < /dev/null 2>&1 \
    | while IFS= read -r line; do
        now_us=${EPOCHREALTIME/./}
        tenths=$(( (now_us - start_us) / 100000 ))
        printf '%4d.%d| %s\n' $((tenths / 10)) $((tenths % 10)) "${line//$'\r'/}"
      done | tee "$out/console.log"
  echo "${PIPESTATUS[0]}" > "$out/vm-rc"
) &
vm_job=$!
# The watchdog: no new console output for stall_s seconds means the guest is hung.
last_size=-1
last_change=$SECONDS
while kill -0 "$vm_job" 2>/dev/null; do
  size=$(stat -c %s "$out/console.log" 2>/dev/null || echo 0)
  if [ "$size" != "$last_size" ]; then
    last_size=$size
    last_change=$SECONDS
  elif [ $((SECONDS - last_change)) -ge "$stall_s" ]; then
    echo "vmtest: no console output for ${stall_s}s: stopping the VM" | tee -a "$out/console.log"
    touch "$out/stalled"
    kill "$(cat "$out/qemu.pid" 2>/dev/null)" 2>/dev/null || true
    break
  fi
  sleep 2
done
wait "$vm_job" || true
vm_rc=$(cat "$out/vm-rc" 2>/dev/null || echo 1)
wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

# Snapshots cross 9p as one tar each (see tests/realkernel/checks.py); unpack them here.
for tarball in "$out"/snapshots/*.tar; do
  [ -e "$tarball" ] || continue
  tar -C "$out/snapshots" -xf "$tarball" && rm "$tarball"
done

# -- Verdict. ----------------------------------------------------------------------------
guest_rc=$(cat "$out/guest-rc" 2>/dev/null || true)
summary=$(tail -n 1 "$out/summary.txt" 2>/dev/null || true)
problem=
if [ -e "$out/stalled" ]; then
  problem="the guest printed nothing for ${stall_s}s (VMTEST_STALL): hung"
elif [ "$vm_rc" = 124 ] || [ "$vm_rc" = 137 ]; then
  problem="the VM ran past the ${timeout_s}s cap (VMTEST_TIMEOUT)"
elif [ "$vm_rc" != 0 ]; then
  problem="QEMU exited with status $vm_rc"
elif [ -z "$guest_rc" ]; then
  problem="the guest powered off without a result (see the VMTEST-INIT lines above)"
elif [ -z "$summary" ]; then
  problem="the guest runner exited $guest_rc without a pytest summary"
elif [ "$guest_rc" != 0 ]; then
  problem="pytest in the guest exited $guest_rc"
fi
echo "vmtest: wall ${wall}s"
if [ -n "$problem" ]; then
  echo "vmtest: FAILED: $problem"
  echo "vmtest: console log: $out/console.log"
  [ -s "$out/dmesg.txt" ] && echo "vmtest: guest dmesg: $out/dmesg.txt"
  [ -s "$out/junit.xml" ] && echo "vmtest: junit report: $out/junit.xml"
  echo "${summary:-0 passed, 1 failed}"
  exit 1
fi

if [ "$update_fixtures" = 1 ]; then
  dest=$repo/tests/data/snapshots
  for snap in "$out"/snapshots/*/; do
    [ -d "$snap" ] || continue
    name=$(basename "$snap")
    rm -rf "${dest:?}/$name"
    mkdir -p "$dest"
    cp -a "$snap" "$dest/$name"
    echo "vmtest: fixture $dest/$name updated ($(du -sh "$dest/$name" | cut -f1)); review: git status $dest"
  done
fi
echo "$summary"
