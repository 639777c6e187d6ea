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
# Kernels (VMTEST_KERNELS, default "debian tier", both): "debian" is Debian 12's own
# kernel from /boot (KVER, default the newest there, with its modules); "tier" is Linux
# 7.3 built from Debian's linux-source with IOMMUFD and the vfio cdev
# (vmtest/kernel/build.sh, cached; the first build takes about half an hour on 2 cores;
# VMTEST_KERNELS=debian runs Debian's alone). Every scenario runs on each kernel named.
# Scenarios marked boot2 run in a second boot of the same kernel that keeps the first
# boot's /etc (a reboot: vmtest/init.sh); the tier kernel builds its drivers in, so there
# they bind before udev and the persisted devices are taken from them at boot.
#
# Environment: VMTEST_OUT (results dir, default vmtest/out; one subdir per kernel and
# boot), VMTEST_CACHE (initramfs cache, default .vmtest-cache), VMTEST_STALL (seconds
# without a new console line after which the VM counts as hung, default 600),
# VMTEST_TIMEOUT (a last-resort cap on each VM, default 3600), VMTEST_MEM (default 1G),
# VMTEST_SMP (default 2), VMTEST_TCG_THREAD (single, the default, or multi),
# VMTEST_EXTRA_DEVICES (see below). A loaded machine makes the
# tier slower, never red: a hang is
# found by a lack of progress (the guest's pytest prints a line per test), not by the
# total time.
# See vmtest/README.md.
set -euo pipefail
# The whole script is one function, read before it runs: editing this file while a run is
# under way cannot change what that run does.
main() {
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
kernels=${VMTEST_KERNELS:-debian tier}
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

# -- Results directory: shared read-write with the guest over 9p. ---------------------------
rm -rf "${out:?}"/k-* "$out/snapshots" "$out/facts"
rm -f "$out"/{guest-rc,summary.txt,junit.xml,dmesg.txt,console.log,pytest-args,qemu.pid,vm-rc,stalled}

# Does the selection hold scenarios for a second boot? (modules marked boot2)
boot2_modules=$(grep -l 'pytest.mark.boot2' "$repo"/tests/realkernel/test_*.py 2>/dev/null || true)
want_boot2=0
if [ ${#pytest_args[@]} -eq 0 ]; then
  [ -n "$boot2_modules" ] && want_boot2=1
else
  for m in $boot2_modules; do
    for a in "${pytest_args[@]}"; do
      case $a in *"$(basename "$m")"*) want_boot2=1 ;; esac
    done
  done
fi

# -- The machine. Guest buses (see vmtest/README.md and tests/realkernel/topology.py):
# 00 root complex | 01 NVMe SR-IOV PF (+VFs) | 02 e1000e | 03 PCIe-to-PCI bridge
# -> 04 e1000 + virtio-rng | 05 switch upstream -> 06 two downstream ports
# -> 07 virtio-rng, 08 e1000e | 09 igb SR-IOV PF (+VFs on 09:10.x). The two 9p devices take
# the first free root-bus slots.
topology=(
  -device e1000e,addr=0x10
  -device virtio-net-pci,addr=0x11.0,multifunction=on
  -device virtio-rng-pci,addr=0x11.1
  -device pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x12
  -device nvme-subsys,id=subsys0,nqn=vmtest-subsys0
  # all three sriov_* properties are needed for QEMU's NVMe to offer VFs
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
  # the seeds' SR-IOV NIC: QEMU's igb (Intel 82576; VFs at offset 128, stride 2)
  -device pcie-root-port,id=rp7,chassis=7,slot=7,addr=0x16
  -device igb,bus=rp7
)
# VMTEST_EXTRA_DEVICES: more -device options, for trying a device before it joins the
# topology (the scenarios expect exactly the list above).
# shellcheck disable=SC2206
topology+=(${VMTEST_EXTRA_DEVICES:-})
qemu_version=$("$qemu" --version | sed -n 's/^QEMU emulator version \([0-9.]*\).*/\1/p')

# boot_once LABEL BOOT KERNEL INITRD MODS -> the verdict line in $kout/boot$BOOT/verdict
boot_once() {
  local label=$1 boot=$2 kimage=$3 initrd=$4 mods=$5
  local kout=$out/k-$label bout=$out/k-$label/boot$2
  mkdir -p "$bout"
  [ "$boot" = 1 ] && rm -f "$kout/persist-etc.tar"
  printf '%s\n' ${pytest_args[@]+"${pytest_args[@]}"} > "$bout/pytest-args"
  local append="console=ttyS0 quiet panic=-1 no_timer_check intel_iommu=on iommu=pt vmtest.out=$bout vmtest.mnt=$kout vmtest.boot=$boot vmtest.python=$python vmtest.runner=$here/guest/runner.py"
  [ -n "$mods" ] && append="$append vmtest.modules=$mods"
  # no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss
  # its ticks and panic ("timer doesn't work through Interrupt-remapped IO-APIC").
  # thread=single: one host thread runs both vCPUs. With a thread per vCPU, QEMU 10.0.2
  # aborted once in iotlb_to_section() ("section_index < d->map.sections_nb") while the
  # 7.3 guest bound VFIO devices behind the emulated IOMMU (a TLB entry of one vCPU outliving
  # the memory map another changed); the tier must never be red for QEMU's sake.
  local qemu_argv=(
    "$qemu" -machine q35 -accel "tcg,thread=${VMTEST_TCG_THREAD:-single}" -cpu max
    -smp "${VMTEST_SMP:-2}" -m "${VMTEST_MEM:-1G}"
    -nodefaults -no-reboot -display none -monitor none -serial stdio
    -kernel "$kimage" -initrd "$initrd" -append "$append"
    # intel-iommu before any PCI device, so that every device gets an IOMMU address space
    -device intel-iommu,intremap=on
    -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    -fsdev local,id=out,path="$kout",security_model=none,multidevs=remap
    -device virtio-9p-pci,fsdev=out,mount_tag=out
    "${topology[@]}"
  )
  echo "vmtest: [$label boot $boot] booting $kimage under TCG, QEMU $qemu_version (hung after ${stall_s}s without output; cap ${timeout_s}s); results in $bout"
  local start=$EPOCHREALTIME
  local start_us=${start/./}
  : > "$bout/console.log"
  (
    set +e
    timeout -k 10 "$timeout_s" "${qemu_argv[@]}" -pidfile "$bout/qemu.pid" < /dev/null 2>&1 \
      | while IFS= read -r line; do
          now_us=${EPOCHREALTIME/./}
          tenths=$(( (now_us - start_us) / 100000 ))
          printf '%4d.%d| %s\n' $((tenths / 10)) $((tenths % 10)) "${line//$'\r'/}"
        done | tee "$bout/console.log"
    echo "${PIPESTATUS[0]}" > "$bout/vm-rc"
  ) &
  local vm_job=$!
  # The watchdog: no new console output for stall_s seconds means the guest is hung.
  # Kernel messages do not count as progress: a wedged guest keeps printing hung-task
  # and RCU-stall reports.
  local last_size=-1 last_change=$SECONDS size
  while kill -0 "$vm_job" 2>/dev/null; do
    size=$(grep -cvE '^ *[0-9]+\.[0-9]\| \[ *[0-9]+\.[0-9]+\]' "$bout/console.log" 2>/dev/null || true)
    if [ "$size" != "$last_size" ]; then
      last_size=$size
      last_change=$SECONDS
    elif [ $((SECONDS - last_change)) -ge "$stall_s" ]; then
      echo "vmtest: no console output but kernel messages for ${stall_s}s: stopping the VM" | tee -a "$bout/console.log"
      touch "$bout/stalled"
      kill "$(cat "$bout/qemu.pid" 2>/dev/null)" 2>/dev/null || true
      break
    fi
    sleep 2
  done
  wait "$vm_job" || true
  local vm_rc wall
  vm_rc=$(cat "$bout/vm-rc" 2>/dev/null || echo 1)
  wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  # Snapshots cross 9p as one tar each (see tests/realkernel/checks.py); unpack them here.
  for tarball in "$bout"/snapshots/*.tar; do
    [ -e "$tarball" ] || continue
    tar -C "$bout/snapshots" -xf "$tarball" && rm "$tarball"
  done
  local guest_rc summary problem=
  guest_rc=$(cat "$bout/guest-rc" 2>/dev/null || true)
  summary=$(tail -n 1 "$bout/summary.txt" 2>/dev/null || true)
  if [ -e "$bout/stalled" ]; then
    problem="the guest printed nothing but kernel messages for ${stall_s}s (VMTEST_STALL): hung"
  elif [ "$vm_rc" = 124 ] || [ "$vm_rc" = 137 ]; then
    problem="the VM ran past the ${timeout_s}s cap (VMTEST_TIMEOUT)"
  elif [ "$vm_rc" != 0 ]; then
    problem="QEMU exited with status $vm_rc"
  elif [ -z "$guest_rc" ]; then
    problem="the guest powered off without a result (see the VMTEST-INIT lines above)"
  elif [ -z "$summary" ]; then
    problem="the guest runner exited $guest_rc without a pytest summary"
  elif [ "$guest_rc" != 0 ] && [ "$guest_rc" != 5 ]; then   # 5: nothing selected
    problem="pytest in the guest exited $guest_rc"
  fi
  echo "vmtest: [$label boot $boot] wall ${wall}s"
  if [ -n "$problem" ]; then
    echo "vmtest: [$label boot $boot] FAILED: $problem"
    echo "vmtest: console log: $bout/console.log"
    [ -s "$bout/dmesg.txt" ] && echo "vmtest: guest dmesg: $bout/dmesg.txt"
    [ -s "$bout/junit.xml" ] && echo "vmtest: junit report: $bout/junit.xml"
    case $summary in *" passed, "*" failed") ;; *) summary="0 passed, 1 failed" ;; esac
    [ "${summary##*, }" = "0 failed" ] && summary="${summary%%, *}, 1 failed"
  fi
  echo "$summary" > "$bout/verdict"
  [ -z "$problem" ]
}

# -- Each kernel: boot 1 (every scenario), then boot 2 where wanted. -----------------------
total_passed=0
total_failed=0
lines=()
failed_any=0
tier_start=$EPOCHREALTIME
for k in $kernels; do
  case $k in
    debian)
      label=$KVER
      kimage=$kernel
      mods=
      key=$(cat "$here/mkinitramfs.sh" "$here/init.sh" | sha256sum | cut -c1-12)
      initrd=$cache/initrd-$KVER-$key.gz
      if [ ! -s "$initrd" ]; then
        rm -f "$cache"/initrd-"$KVER"-*.gz
        "$here/mkinitramfs.sh" "$KVER" "$initrd"
      fi
      boots="1"
      [ "$want_boot2" = 1 ] && boots="1 2"
      ;;
    tier)
      if [ ! -x "$here/kernel/build.sh" ]; then
        echo "vmtest: [tier] no vmtest/kernel/build.sh in this checkout: the tier kernel is not run"
        continue
      fi
      echo "vmtest: [tier] the tier kernel (vmtest/kernel/build.sh; cached after the first build)"
      if ! kimage=$("$here/kernel/build.sh" | tail -n 1) || [ ! -r "$kimage" ]; then
        echo "vmtest: [tier] FAILED: vmtest/kernel/build.sh did not produce a kernel"
        lines+=("vmtest: kernel tier (not built), QEMU $qemu_version: 0 passed, 1 failed")
        total_failed=$((total_failed + 1)); failed_any=1
        continue
      fi
      kdir=$(dirname "$kimage")
      label=$(cat "$kdir/release")
      mods=$kdir/mods/lib/modules
      key=$(cat "$here/mkinitramfs.sh" "$here/init.sh" | sha256sum | cut -c1-12)
      initrd=$cache/initrd-builtin-$key.gz
      if [ ! -s "$initrd" ]; then
        rm -f "$cache"/initrd-builtin-*.gz
        "$here/mkinitramfs.sh" builtin "$initrd"
      fi
      boots="1"
      [ "$want_boot2" = 1 ] && boots="1 2"
      ;;
    *) echo "vmtest: unknown kernel '$k' in VMTEST_KERNELS (debian, tier)" >&2; exit 2 ;;
  esac
  passed=0
  failed=0
  for b in $boots; do
    if [ "$b" = 2 ] && [ ! -s "$out/k-$label/persist-etc.tar" ]; then
      # boot 2 is the reboot of boot 1: without the /etc boot 1 saved it has nothing to check
      echo "vmtest: [$label boot 2] not run: boot 1 saved no /etc (see its failure above)"
      mkdir -p "$out/k-$label/boot2"
      echo "0 passed, 1 failed" > "$out/k-$label/boot2/verdict"
      failed_any=1
    else
      boot_once "$label" "$b" "$kimage" "$initrd" "$mods" || failed_any=1
    fi
    v=$(cat "$out/k-$label/boot$b/verdict")
    p=${v%% passed*}
    f=${v##*, }
    f=${f%% failed*}
    passed=$((passed + p))
    failed=$((failed + f))
  done
  lines+=("vmtest: kernel $label, QEMU $qemu_version: $passed passed, $failed failed")
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  if [ "$k" = debian ] && [ "$update_fixtures" = 1 ] && [ "$failed" = 0 ]; then
    dest=$repo/tests/data/snapshots
    for snap in "$out/k-$label/boot1"/snapshots/*/; do
      [ -d "$snap" ] || continue
      name=$(basename "$snap")
      rm -rf "${dest:?}/$name"
      mkdir -p "$dest"
      cp -a "$snap" "$dest/$name"
      echo "vmtest: fixture $dest/$name updated ($(du -sh "$dest/$name" | cut -f1)); review: git status $dest"
    done
  fi
done
wall=$(awk -v a="$tier_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
echo "vmtest: wall ${wall}s"
for l in "${lines[@]}"; do echo "$l"; done
echo "$total_passed passed, $total_failed failed"
[ "$failed_any" = 0 ] && [ "$total_failed" = 0 ]
}
main "$@"
