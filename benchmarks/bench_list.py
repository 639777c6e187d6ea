"""Benchmark: `vfioctl list --json` against `lspci -D -nn -k` on the same sysfs tree.

Two trees, both read by both tools from a real directory:

- ``generated``: a generated simulated host (default 4,096 functions) exported with
  `vfioctl snapshot`;
- ``vf-heavy``: 16 SR-IOV PFs with 255 VFs each (4,113 functions), stamped from the
  real kernel's sysfs captured in tests/data/snapshots/q35-sriov (benchmarks/vf_tree.py).

Both tools are run as fresh processes (what a user waits for), alternately, after a
warm-up that fills the page cache; the script prints the medians and their ratio,
measured in the same run. The goal is a ratio of at most 1.0 (no slower than lspci).
Nothing here asserts a time: the machine's load decides the absolute numbers.

    .venv/bin/python benchmarks/bench_list.py [--scenario all|generated|vf-heavy]
        [--functions 4096] [--runs 9] [--tree DIR] [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vf_tree import build_vf_tree

VFIOCTL = [sys.executable, "-m", "vfioctl.cli.main"]
GOAL = 1.0


def _vfioctl_bin() -> list[str]:
    exe = Path(sys.executable).with_name("vfioctl")
    return [str(exe)] if exe.exists() else VFIOCTL


def build_generated_tree(functions: int, workdir: Path) -> Path:
    host_file = workdir / "big.toml"
    tree = workdir / "tree"
    subprocess.run([*_vfioctl_bin(), "sim", "generate", "--functions", str(functions),
                    str(host_file)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*_vfioctl_bin(), "--host", f"sim:{host_file}", "snapshot", str(tree)],
                   check=True, stdout=subprocess.DEVNULL)
    return tree


def child_env(workdir: Path, bytecode_cache: bool) -> dict[str, str]:
    """vfioctl as an installed package runs it: with bytecode caches.

    pip compiles a wheel's modules at install time, so the default is to let the
    warm-up runs write vfioctl's caches (into the benchmark's own directory, not the
    source tree). ``--no-bytecode-cache`` instead runs it as a checkout with
    PYTHONDONTWRITEBYTECODE set does: the standard library and click from their
    installed caches, vfioctl compiled from source on every run (unless its
    ``__pycache__`` directories exist from elsewhere).
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    if bytecode_cache:
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def time_cmd(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)
    return time.perf_counter() - t0


def compare(name: str, tree: Path, lspci: str, runs: int, env: dict[str, str]) -> float:
    """Time both tools on ``tree``; print and return the ratio of the medians."""
    n = len(list((tree / "sys/bus/pci/devices").iterdir()))
    ours = [*_vfioctl_bin(), "--host", f"linux:{tree}", "list", "--json"]
    theirs = [lspci, "-A", "linux-sysfs", "-O", f"sysfs.path={tree}/sys/bus/pci",
              "-D", "-nn", "-k"]
    for _ in range(2):  # warm-up: page cache, dentries, bytecode caches
        time_cmd(ours, env)
        time_cmd(theirs)
    t_ours, t_theirs = [], []
    for _ in range(runs):
        t_ours.append(time_cmd(ours, env))
        t_theirs.append(time_cmd(theirs))
    m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    ratio = m_ours / m_theirs
    print(f"[{name}] functions: {n}, runs: {runs} each (medians)")
    print(f"[{name}] vfioctl list --json : {m_ours * 1000:8.1f} ms")
    print(f"[{name}] lspci -D -nn -k     : {m_theirs * 1000:8.1f} ms")
    print(f"[{name}] ratio vfioctl/lspci : {ratio:8.2f}x  (goal <= {GOAL:.1f}x)")
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=("all", "generated", "vf-heavy"), default="all")
    ap.add_argument("--functions", type=int, default=4096,
                    help="size of the generated host")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--tree", type=Path,
                    help="an existing snapshot tree to use instead (one comparison)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="run vfioctl as a checkout with PYTHONDONTWRITEBYTECODE does "
                    "(its modules compiled on every run), not as installed")
    args = ap.parse_args()
    lspci = shutil.which("lspci")
    if lspci is None:
        print("bench_list: lspci (Debian pciutils) is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vfioctl-bench-") as tmp:
        work = Path(tmp)
        env = child_env(work, bytecode_cache=not args.no_bytecode_cache)
        print("vfioctl runs " + ("without writing bytecode caches (a checkout)"
                                 if args.no_bytecode_cache
                                 else "with bytecode caches (as installed)"))
        if args.tree:
            compare(args.tree.name, args.tree, lspci, args.runs, env)
            return 0
        if args.scenario in ("all", "generated"):
            t0 = time.perf_counter()
            tree = build_generated_tree(args.functions, work)
            print(f"generated and snapshotted {args.functions} functions in "
                  f"{time.perf_counter() - t0:.1f} s")
            compare("generated", tree, lspci, args.runs, env)
        if args.scenario in ("all", "vf-heavy"):
            t0 = time.perf_counter()
            n = build_vf_tree(work / "vf-heavy", pfs=16, vfs=255)
            print(f"stamped {n} functions (16 PFs x 255 VFs) from the q35-sriov capture "
                  f"in {time.perf_counter() - t0:.1f} s")
            compare("vf-heavy", work / "vf-heavy", lspci, args.runs, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
