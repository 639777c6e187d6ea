"""The dependency arrows of STYLE.md 2.1, enforced on every module's imports (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "vfioctl"

# module prefix -> prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "vfioctl.errors": ("vfioctl.",),
    "vfioctl.address": ("vfioctl.host", "vfioctl.pci", "vfioctl.sim", "vfioctl.cli",
                        "vfioctl.conf", "vfioctl.qemu", "vfioctl.manager"),
    "vfioctl.conf": ("vfioctl.host", "vfioctl.pci", "vfioctl.sim", "vfioctl.manager",
                     "vfioctl.vfio", "vfioctl.cli", "vfioctl.state"),
    "vfioctl.qemu": ("vfioctl.host", "vfioctl.pci", "vfioctl.sim", "vfioctl.manager",
                     "vfioctl.vfio", "vfioctl.cli", "vfioctl.state"),
    "vfioctl.pci": ("vfioctl.sim", "vfioctl.host.linux", "vfioctl.cli", "vfioctl.manager"),
    "vfioctl.vfio": ("vfioctl.sim", "vfioctl.host.linux", "vfioctl.cli", "vfioctl.manager"),
    "vfioctl.manager": ("vfioctl.sim", "vfioctl.host.linux", "vfioctl.cli"),
    "vfioctl.host.base": ("vfioctl.pci", "vfioctl.sim", "vfioctl.cli", "vfioctl.manager"),
    "vfioctl.host.linux": ("vfioctl.pci", "vfioctl.sim", "vfioctl.cli", "vfioctl.manager"),
    "vfioctl.host.uapi": ("vfioctl.pci", "vfioctl.sim", "vfioctl.cli", "vfioctl.manager"),
    "vfioctl.sim": ("vfioctl.cli", "vfioctl.manager", "vfioctl.pci", "vfioctl.conf",
                    "vfioctl.qemu"),
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module,path", _modules(), ids=[m for m, _ in _modules()])
def test_layering(module: str, path: Path) -> None:
    for prefix, banned in FORBIDDEN.items():
        if module == prefix or module.startswith(prefix + "."):
            bad = sorted(i for i in _imports(path) for b in banned
                         if i == b.rstrip(".") or i.startswith(b if b.endswith(".") else b + ".")
                         or i == b)
            assert not bad, f"{module} must not import {bad}"
    if not module.startswith("vfioctl.cli"):
        assert not [i for i in _imports(path) if i.startswith("vfioctl.cli")], (
            f"{module} imports the CLI layer")
