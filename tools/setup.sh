#!/usr/bin/env bash
# Set up everything vfioctl needs on Debian 12: Debian packages (when root), then a
# virtualenv in .venv with vfioctl installed editable.
#   tools/setup.sh          runtime only (pciutils for lspci, pci.ids names)
#   tools/setup.sh --test   also what the test suite uses: QEMU + a kernel for the
#                           real-kernel tier, libvirt's virt-xml-validate, make
set -euo pipefail
cd "$(dirname "$0")/.."
want=(python3-venv pciutils pci.ids make)
if [ "${1:-}" = "--test" ]; then
  want+=(qemu-system-x86 linux-image-amd64 busybox-static cpio kmod file xz-utils zstd
         libvirt-clients libxml2-utils)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
      "${missing[@]}" >/dev/null
  else
    echo "setup: not root or no apt-get; missing Debian packages: ${missing[*]}" >&2
    echo "setup: tests that need them will be skipped with a message" >&2
  fi
fi
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
stamp=".venv/.installed$extra"
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".$extra"
  touch "$stamp"
fi
