#!/bin/busybox sh
# /init of the real-kernel tier's guest (busybox sh; set -euo pipefail does not apply to
# an init that must always reach poweroff). It mounts the host's / read-only over 9p,
# gives the guest writable RAM overlays where programs expect to write, mounts the
# results directory read-write at the same path as on the host, then chroots and runs
#   vmtest.python vmtest.runner --out vmtest.out
# from the kernel command line. The runner's exit status goes to OUT/guest-rc; the VM
# powers off either way so the host never waits for its timeout on a clean failure.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

die() {
  echo "VMTEST-INIT: $*"
  poweroff -f
}

arg() { # value of vmtest.NAME=VALUE on the kernel command line
  sed -n "s/.*vmtest\.$1=\([^ ]*\).*/\1/p" /proc/cmdline
}
OUT=$(arg out)
PY=$(arg python)
RUNNER=$(arg runner)
[ -n "$OUT" ] && [ -n "$PY" ] && [ -n "$RUNNER" ] || die "missing vmtest.out/python/runner on the cmdline"

for ko in /lib/modules/*.ko; do
  insmod "$ko" || die "insmod $ko failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host \
  || die "cannot mount the host's / over 9p"
for d in proc sys dev; do
  mount --bind "/$d" "/host/$d"
done
# Writable places, host content still visible below: writes stay in guest RAM.
mkdir -p /rw
mount -t tmpfs rw /rw
for d in tmp run var/tmp root; do
  n=$(echo "$d" | tr / _)
  mkdir -p "/rw/$n/upper" "/rw/$n/work"
  mount -t overlay -o "lowerdir=/host/$d,upperdir=/rw/$n/upper,workdir=/rw/$n/work" "ov_$n" "/host/$d" \
    || mount -t tmpfs "$n" "/host/$d" || die "no writable /$d"
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "/host$OUT" \
  || die "cannot mount the results directory $OUT"

echo "VMTEST-INIT: userland up after $(cut -d' ' -f1 /proc/uptime)s; running $RUNNER"
chroot /host /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp \
  "$PY" "$RUNNER" --out "$OUT"
rc=$?
echo "$rc" > "/host$OUT/guest-rc"
sync
umount "/host$OUT"
echo "VMTEST-INIT: runner exited $rc after $(cut -d' ' -f1 /proc/uptime)s; powering off"
poweroff -f
