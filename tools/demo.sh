#!/usr/bin/env bash
# Quick start, command 1: set up, then show this host's VFIO picture. On a host with
# real IOMMU groups it reads the running kernel (read-only); otherwise it uses the
# bundled simulated workstation.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
if [ -z "${VFIOCTL_HOST:-}" ]; then
  if [ -n "$(ls -A /sys/kernel/iommu_groups 2>/dev/null)" ]; then
    export VFIOCTL_HOST=linux
  else
    echo "(no IOMMU groups on this machine: using the bundled simulated host sim:workstation)"
    export VFIOCTL_HOST=sim:workstation
  fi
fi
set -x
.venv/bin/vfioctl doctor || true
.venv/bin/vfioctl groups
.venv/bin/vfioctl list
