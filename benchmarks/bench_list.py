"""Benchmark: `vfioctl list --json` against `lspci -D -nn -k` on the same sysfs tree.

The tree is a generated simulated host (default 4,096 functions) exported with
`vfioctl snapshot`, so both tools read the very same files from a real directory. Both
are run as fresh processes (what a user waits for), alternately, after a warm-up that
fills the page cache; the script prints the medians and their ratio. The goal from the
simulator issue is a ratio of at most 2.

    .venv/bin/python benchmarks/bench_list.py [--functions 4096] [--runs 9] [--tree DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VFIOCTL = [sys.executable, "-m", "vfioctl.cli.main"]


def _vfioctl_bin() -> list[str]:
    exe = Path(sys.executable).with_name("vfioctl")
    return [str(exe)] if exe.exists() else VFIOCTL


def build_tree(functions: int, workdir: Path) -> Path:
    host_file = workdir / "big.toml"
    tree = workdir / "tree"
    subprocess.run([*_vfioctl_bin(), "sim", "generate", "--functions", str(functions),
                    str(host_file)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*_vfioctl_bin(), "--host", f"sim:{host_file}", "snapshot", str(tree)],
                   check=True, stdout=subprocess.DEVNULL)
    return tree


def time_cmd(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--functions", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--tree", type=Path, help="an existing snapshot tree to use instead")
    args = ap.parse_args()
    lspci = shutil.which("lspci")
    if lspci is None:
        print("bench_list: lspci (Debian pciutils) is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vfioctl-bench-") as tmp:
        if args.tree:
            tree = args.tree
        else:
            t0 = time.perf_counter()
            tree = build_tree(args.functions, Path(tmp))
            print(f"generated and snapshotted {args.functions} functions in "
                  f"{time.perf_counter() - t0:.1f} s")
        n = len(list((tree / "sys/bus/pci/devices").iterdir()))
        ours = [*_vfioctl_bin(), "--host", f"linux:{tree}", "list", "--json"]
        theirs = [lspci, "-A", "linux-sysfs", "-O", f"sysfs.path={tree}/sys/bus/pci",
                  "-D", "-nn", "-k"]
        for argv in (ours, theirs):  # warm-up: page cache, pyc files
            time_cmd(argv)
        t_ours, t_theirs = [], []
        for _ in range(args.runs):
            t_ours.append(time_cmd(ours))
            t_theirs.append(time_cmd(theirs))
        m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        print(f"functions: {n}, runs: {args.runs} each (medians)")
        print(f"vfioctl list --json : {m_ours * 1000:8.1f} ms")
        print(f"lspci -D -nn -k     : {m_theirs * 1000:8.1f} ms")
        print(f"ratio vfioctl/lspci : {m_ours / m_theirs:8.2f}x  (goal <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
