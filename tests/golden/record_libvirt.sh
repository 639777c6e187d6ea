#!/bin/sh
# Record libvirt 9.0's own QEMU command line for every xml2argv case, as the oracle that
# tests/golden/test_xml2argv.py compares vfioctl's goldens with (no libvirtd needed then).
#
# Needs a running libvirtd with the QEMU driver (Debian 12: apt-get install
# libvirt-daemon-system; then `virtlogd -d; libvirtd -d` where there is no systemd) and
# the <emulator> of the cases (/usr/bin/qemu-system-x86_64). Writes <case>.libvirt next
# to each case: the verbatim output of `virsh domxml-to-native qemu-argv`, or libvirt's
# error message when it refuses the document. The environment libvirt puts in front of
# the binary (LC_ALL, PATH, HOME …) is cut off: it describes the recording machine only.
set -eu
dir=$(dirname "$0")/../data/xml2argv
uri=${LIBVIRT_URI:-qemu:///system}
virsh -c "$uri" version | sed -n 's/^Using library: /# /p' >&2
for xml in "$dir"/*.xml; do
    out=${xml%.xml}.libvirt
    if virsh -q -c "$uri" domxml-to-native qemu-argv "$xml" >"$out.raw" 2>"$out.stderr"; then
        sed 's|^.* \(/[^ ]*qemu-system-[^ ]*\) |\1 |' "$out.raw" >"$out"
    else
        grep -v '^$' "$out.stderr" >"$out" || true
    fi
    rm -f "$out.stderr" "$out.raw"
done
