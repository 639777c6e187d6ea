#!/bin/bash
# Run inside `unshare -m --propagation private`: a libvirtd of our own, on private copies
# of libvirt's directories (the machine's libvirt, and its running daemons, are not
# touched), with vfioctl's hook installed on a simulated host. Usage:
#   realdaemon.sh OUT VFIOCTL_PYTHON SIMFILE
# Writes results under OUT; the daemons it started are stopped before it returns.
set -u
OUT=$1 PY=$2 SIM=$3
R=$OUT/root
mkdir -p "$R/etc" "$R/lib" "$R/log" "$R/cache"
cp -a /etc/libvirt/. "$R/etc/"
rm -rf "$R/etc/hooks" "$R/etc/qemu"/*.xml
mkdir -p "$R/etc/hooks/qemu.d"
mount --bind "$R/etc" /etc/libvirt
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt
mount --bind "$R/lib" /var/lib/libvirt
mount --bind "$R/log" /var/log/libvirt
mount --bind "$R/cache" /var/cache/libvirt
export VFIOCTL_HOST="sim:$SIM" VFIOCTL_LIBVIRT_RUN_DIR=/run/vfioctl-libvirt
"$PY" -m vfioctl libvirt install --wrapper "$OUT/vfioctl-qemu" > "$OUT/install.out" 2>&1
# a probe that runs after vfioctl's hook (qemu.d/ in name order): the sim host as each
# call left it, and the XML libvirt gave
cat > /etc/libvirt/hooks/qemu.d/zz-probe <<PROBE
#!/bin/sh
cat > "$OUT/xml-\$1-\$2-\$3.xml"
cp "$SIM" "$OUT/sim-\$1-\$2-\$3.toml"
PROBE
chmod 755 /etc/libvirt/hooks/qemu.d/zz-probe
unset VFIOCTL_HOST VFIOCTL_LIBVIRT_RUN_DIR     # the hook must get them from its script
virtlogd -d
libvirtd -d
for _ in $(seq 100); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done
domain() {  # NAME EMULATOR HOSTDEV-XML METADATA-XML
  cat <<D
<domain type='qemu'>
  <name>$1</name>
  <metadata>$4</metadata>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>$2</emulator>$3<graphics type='vnc' port='-1' listen='127.0.0.1'/></devices>
</domain>
D
}
GPU="<hostdev mode='subsystem' type='pci' managed='no'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>"
OPT="<vfioctl:devices xmlns:vfioctl='urn:vfioctl:libvirt:1'><vfioctl:hostdev address='0000:01:00.0' group='allow'/></vfioctl:devices>"
run() {  # SCENARIO NAME EMULATOR HOSTDEV METADATA
  domain "$2" "$3" "$4" "$5" > "$OUT/$1.xml"
  virsh -q define "$OUT/$1.xml" > /dev/null
  virsh -q start "$2" > "$OUT/$1.start.out" 2> "$OUT/$1.start.err"
  echo $? > "$OUT/$1.start.rc"
  if [ "$(cat "$OUT/$1.start.rc")" = 0 ]; then
    pid=$(cat "/run/libvirt/qemu/$2.pid")
    echo "$pid" > "$OUT/$1.pid"
    readlink "/proc/$pid/exe" > "$OUT/$1.exe"
    tr '\0' '\n' < "/proc/$pid/cmdline" > "$OUT/$1.cmdline"
    virsh -q destroy "$2" > /dev/null 2>&1
  fi
  virsh -q undefine "$2" > /dev/null 2>&1
}
run opt-in gpu-optin /usr/bin/qemu-system-x86_64 "$GPU" "$OPT"
run no-opt-in gpu-noopt /usr/bin/qemu-system-x86_64 "$GPU" ""
run wrapped tiny "$OUT/vfioctl-qemu" "" ""
cp -r /var/log/libvirt "$OUT/logs" 2>/dev/null
kill "$(cat /run/libvirtd.pid)" "$(cat /run/virtlogd.pid)"
for _ in $(seq 100); do
  kill -0 "$(cat /run/libvirtd.pid 2>/dev/null || echo 0)" 2>/dev/null || break; sleep 0.1
done
exit 0
