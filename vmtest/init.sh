#!/bin/busybox sh
# /init of the real-kernel tier's guest (busybox sh; set -euo pipefail does not apply to
# an init that must always reach poweroff). It mounts the host's / read-only over 9p,
# gives the guest writable RAM overlays where programs expect to write (/etc and /var
# included: libvirtd and the persistence scenarios write there), mounts the results
# directory (vmtest.mnt, holding this boot's vmtest.out) read-write at the same path as on
# the host, then chroots and runs
#   vmtest.python vmtest.runner --out vmtest.out --boot vmtest.boot
# from the kernel command line. The runner's exit status goes to OUT/guest-rc; the VM
# powers off either way so the host never waits for its timeout on a clean failure.
#
# A reboot, as the persistence scenarios need it: at the end of every boot the upper
# layer of /etc (what the guest wrote there) is saved to MNT/persist-etc.tar, and a boot
# with vmtest.boot=2 restores it before anything runs, so /etc survives like on a disk
# while /run, /tmp and the kernel's state start fresh. vmtest.modules=DIR (a kernel built
# with its drivers in, whose modules.builtin lives outside /lib/modules) is bound over
# /lib/modules.
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
MNT=$(arg mnt)
[ -n "$MNT" ] || MNT=$OUT
BOOT=$(arg boot)
[ -n "$BOOT" ] || BOOT=1
MODS=$(arg modules)
PY=$(arg python)
RUNNER=$(arg runner)
[ -n "$OUT" ] && [ -n "$PY" ] && [ -n "$RUNNER" ] || die "missing vmtest.out/python/runner on the cmdline"

for ko in /lib/modules/*.ko; do
  [ -e "$ko" ] || continue   # a kernel with virtio-pci, 9p and overlayfs built in
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
for d in tmp run root; do
  n=$(echo "$d" | tr / _)
  mkdir -p "/rw/$n/upper" "/rw/$n/work"
  mount -t overlay -o "lowerdir=/host/$d,upperdir=/rw/$n/upper,workdir=/rw/$n/work" "ov_$n" "/host/$d" \
    || mount -t tmpfs "$n" "/host/$d" || die "no writable /$d"
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "/host$MNT" \
  || die "cannot mount the results directory $MNT"
mkdir -p "/host$OUT"
# /etc and /var: RAM overlays too; /etc's upper layer comes back from the previous boot.
for d in var etc; do
  mkdir -p "/rw/$d/upper" "/rw/$d/work"
done
if [ "$BOOT" != 1 ] && [ -s "/host$MNT/persist-etc.tar" ]; then
  tar -C /rw/etc/upper -xf "/host$MNT/persist-etc.tar" || die "cannot restore /etc from the last boot"
  echo "VMTEST-INIT: boot $BOOT: /etc as the last boot left it ($(tar -tf "/host$MNT/persist-etc.tar" | wc -l) entries)"
fi
for d in var etc; do
  mount -t overlay -o "lowerdir=/host/$d,upperdir=/rw/$d/upper,workdir=/rw/$d/work" "ov_$d" "/host/$d" \
    || die "no writable /$d"
done
if [ -n "$MODS" ]; then
  mount --bind "/host$MODS" /host/lib/modules || die "cannot bind $MODS over /lib/modules"
fi

echo "VMTEST-INIT: userland up after $(cut -d' ' -f1 /proc/uptime)s; running $RUNNER"
chroot /host /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp \
  "$PY" "$RUNNER" --out "$OUT" --boot "$BOOT"
rc=$?
echo "$rc" > "/host$OUT/guest-rc"
(cd /rw/etc/upper && tar -cf "/host$MNT/persist-etc.tar.new" . && mv "/host$MNT/persist-etc.tar.new" "/host$MNT/persist-etc.tar") \
  || echo "VMTEST-INIT: could not save /etc for the next boot"
sync
umount "/host$MNT"
echo "VMTEST-INIT: runner exited $rc after $(cut -d' ' -f1 /proc/uptime)s; powering off"
poweroff -f
