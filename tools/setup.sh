#!/usr/bin/env bash
# Set up everything vfioctl needs on Debian 12: Debian packages (when root), then a
# virtualenv in .venv with vfioctl installed editable.
#   tools/setup.sh          runtime only (pciutils for lspci, pci.ids names)
#   tools/setup.sh --test   also what the test suite uses: QEMU + a kernel for the
#                           real-kernel tier, libvirt (virsh, libvirtd,
#                           virt-xml-validate), udev, make
#
# The test stack is today's, from Debian's own archive: QEMU 10 and libvirt 11 come from
# bookworm-backports (setup adds that suite to apt's sources and takes only the packages
# named below from it), and Debian 12's QEMU 7.2 is kept beside it, unpacked into the
# cache (VFIOCTL_CACHE, default ~/.cache/vfioctl-vmtest/qemu-7.2), because a QEMU without
# vfio-pci's vf-token is a case the tests cover. A second run costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
want=(python3-venv pciutils pci.ids make)
backports=()
if [ "${1:-}" = "--test" ]; then
  want+=(linux-image-amd64 busybox-static cpio kmod file xz-utils zstd libxml2-utils udev
         podman crun)
  backports=(qemu-system-x86 libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu)
fi
bpo_missing=()
for p in "${backports[@]}"; do
  dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null | grep -q "ok installed.*bpo12" \
    || bpo_missing+=("$p")
done
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
bpo_list=/etc/apt/sources.list.d/vfioctl-bookworm-backports.sources
if [ ${#missing[@]} -gt 0 ] || [ ${#bpo_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#bpo_missing[@]} -gt 0 ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "setup: adding Debian's bookworm-backports suite to apt ($bpo_list)"
      printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
        "Suites: bookworm-backports" "Components: main" \
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" > "$bpo_list"
    fi
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
      echo "setup: installing Debian packages: ${missing[*]}"
      apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
        "${missing[@]}" >/dev/null
    fi
    if [ ${#bpo_missing[@]} -gt 0 ]; then
      echo "setup: installing from bookworm-backports: ${bpo_missing[*]}"
      apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
        -t bookworm-backports "${bpo_missing[@]}" >/dev/null
    fi
  else
    echo "setup: not root or no apt-get; missing Debian packages: ${missing[*]} ${bpo_missing[*]}" >&2
    echo "setup: tests that need them will be skipped with a message" >&2
  fi
fi
if [ "${1:-}" = "--test" ]; then
  tools/qemu72.sh >/dev/null || echo "setup: Debian 12's QEMU 7.2 could not be kept; its tests skip" >&2
fi
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extra="[dra]"
[ "${1:-}" = "--test" ] && extra="[dra,test]"
stamp=".venv/.installed$extra"
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".$extra"
  touch "$stamp"
fi
# The DRA driver's gRPC stubs, generated from our own .proto files (not tracked).
gen=src/vfioctl/dra/gen
if [ ! -e "$gen/dra_v1_pb2.py" ] || [ -n "$(find src/vfioctl/dra/proto tools/gen-proto.sh -newer "$gen/dra_v1_pb2.py" 2>/dev/null)" ]; then
  PYTHON="$PWD/.venv/bin/python" tools/gen-proto.sh >/dev/null
fi
