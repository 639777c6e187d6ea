# Developer entry points; the README's quick start uses tools/demo.sh and tools/test.sh.
.PHONY: setup demo test test-fast lint test-vm bench man
setup:
	tools/setup.sh --test
demo:
	tools/demo.sh
test:
	tools/test.sh
test-fast: setup
	.venv/bin/python -m pytest -q
lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/mypy
# The real-kernel tier: boots Debian's kernel in QEMU (TCG) with an emulated IOMMU and
# runs tests/realkernel inside it. See vmtest/README.md.
test-vm: setup
	vmtest/run.sh
bench: setup
	.venv/bin/python benchmarks/bench_list.py
# The man page, generated from the command tree.
man: setup
	.venv/bin/python -m vfioctl.cli.manpage > vfioctl.1
