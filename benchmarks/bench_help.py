"""Benchmark: `vfioctl --help` against `python -c "import click"` in the same venv.

The CLI's start-up is what every command pays before it does anything: the peer is the
least a click program can cost (the interpreter plus click). Both run as fresh
processes, alternately, after a warm-up; the script prints the medians and their ratio
measured in the same run. The goal is a ratio of at most 1.25. Nothing here asserts a
time: the machine's load decides the absolute numbers.

    .venv/bin/python benchmarks/bench_help.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL = 1.25


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("vfioctl")
    vfioctl = [str(exe), "--help"] if exe.exists() else [
        sys.executable, "-m", "vfioctl", "--help"]
    click = [sys.executable, "-c", "import click"]
    for cmd in (vfioctl, click):
        _time(cmd)                       # warm-up: page cache, .pyc files
    ours, peer = [], []
    for _ in range(args.runs):
        ours.append(_time(vfioctl))
        peer.append(_time(click))
    a, b = statistics.median(ours), statistics.median(peer)
    print(f"vfioctl --help          median {a * 1000:7.1f} ms ({args.runs} runs)")
    print(f"python -c 'import click' median {b * 1000:7.1f} ms ({args.runs} runs)")
    print(f"ratio {a / b:.2f}x (goal <= {GOAL}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
