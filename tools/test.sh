#!/usr/bin/env bash
# Quick start, command 2: set up and run the whole test suite: lint, types, the fast
# suite (simulator, fixtures, goldens, lspci/QEMU/libvirt oracles) and the real-kernel
# tier (a Linux guest in QEMU with an IOMMU; `make test-vm`).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh --test
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
make test-vm
