"""The layering of docs/rationale.md "Architecture rules" (FORBIDDEN below is the list),
enforced on every module's imports (ast), and front ends kept to public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "vfioctl"

# module prefix -> prefixes it must never import
_ABOVE_MECHANICS = ("vfioctl.manager", "vfioctl.state", "vfioctl.cli", "vfioctl.launch",
                    "vfioctl.sim", "vfioctl.hosts")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the bottom layer: imported by everything, imports nothing of vfioctl but errors
    "vfioctl.errors": ("vfioctl.",),
    "vfioctl.address": ("vfioctl.host", "vfioctl.pci", "vfioctl.vfio", "vfioctl.sim",
                        "vfioctl.cli", "vfioctl.conf", "vfioctl.qemu", "vfioctl.manager",
                        "vfioctl.state", "vfioctl.launch"),
    "vfioctl.secret": ("vfioctl.host", "vfioctl.pci", "vfioctl.vfio", "vfioctl.sim",
                       "vfioctl.cli", "vfioctl.conf", "vfioctl.qemu", "vfioctl.manager",
                       "vfioctl.state", "vfioctl.launch"),
    # pure translation: never sees a host
    "vfioctl.conf": ("vfioctl.host", "vfioctl.pci", "vfioctl.sim", "vfioctl.manager",
                     "vfioctl.vfio", "vfioctl.cli", "vfioctl.state", "vfioctl.launch",
                     "vfioctl.hosts"),
    "vfioctl.qemu": ("vfioctl.host", "vfioctl.pci", "vfioctl.sim", "vfioctl.manager",
                     "vfioctl.vfio", "vfioctl.cli", "vfioctl.state", "vfioctl.launch",
                     "vfioctl.hosts"),
    # mechanics: no locks, no state, no policy
    "vfioctl.pci": ("vfioctl.host.linux", "vfioctl.vfio", *_ABOVE_MECHANICS),
    "vfioctl.vfio": ("vfioctl.host.linux", *_ABOVE_MECHANICS),
    # the seam knows none of its implementations
    "vfioctl.host": ("vfioctl.pci", "vfioctl.vfio", "vfioctl.sim", "vfioctl.cli",
                     "vfioctl.manager", "vfioctl.state", "vfioctl.launch", "vfioctl.hosts"),
    "vfioctl.host.base": ("vfioctl.host.linux",),
    # state: below the manager, above nothing that touches a host
    "vfioctl.state": ("vfioctl.host", "vfioctl.pci", "vfioctl.vfio", "vfioctl.sim",
                      "vfioctl.cli", "vfioctl.manager", "vfioctl.launch", "vfioctl.conf",
                      "vfioctl.qemu", "vfioctl.hosts"),
    # policy: on any host, through the seam only
    "vfioctl.manager": ("vfioctl.sim", "vfioctl.host.linux", "vfioctl.cli", "vfioctl.launch",
                        "vfioctl.hosts"),
    # the launcher's runtime directory obeys the state directory's rules (state.secure);
    # records and tokens are the manager's
    "vfioctl.launch": ("vfioctl.sim", "vfioctl.host.linux", "vfioctl.cli", "vfioctl.state.db",
                       "vfioctl.state.tokens", "vfioctl.state.session", "vfioctl.hosts"),
    # the read model: what list/groups/show return, for every front end
    "vfioctl.model": ("vfioctl.host.linux", *_ABOVE_MECHANICS),
    # persistent bindings: policy through the manager/facade, on any host through the seam
    "vfioctl.persist": ("vfioctl.sim", "vfioctl.host.linux", "vfioctl.cli", "vfioctl.launch",
                        "vfioctl.dra", "vfioctl.libvirt"),
    # front ends built on the facade (public names only, see FRONT_ENDS)
    "vfioctl.libvirt": ("vfioctl.sim", "vfioctl.host.linux", "vfioctl.cli", "vfioctl.dra"),
    "vfioctl.dra": ("vfioctl.sim", "vfioctl.host.linux", "vfioctl.cli", "vfioctl.libvirt",
                    "vfioctl.launch"),
    "vfioctl.sim": ("vfioctl.cli", "vfioctl.manager", "vfioctl.pci", "vfioctl.conf",
                    "vfioctl.qemu", "vfioctl.state", "vfioctl.launch", "vfioctl.vfio",
                    "vfioctl.hosts"),
}
# Front ends use public names only: what the facade and the modules' __all__ offer.
FRONT_ENDS = ("vfioctl.cli", "vfioctl.launch", "vfioctl.libvirt", "vfioctl.dra")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _private_uses(path: Path) -> list[str]:
    """``from vfioctl.x import _y`` and ``something._y`` on anything but self/cls."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vfioctl"):
            out += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") \
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            out.append(f"line {node.lineno}: {ast.unparse(node)}")
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
    if not module.startswith("vfioctl.cli") and module != "vfioctl.__main__":
        assert not [i for i in _imports(path) if i.startswith("vfioctl.cli")], (
            f"{module} imports the CLI layer")


@pytest.mark.parametrize("module,path", [(m, p) for m, p in _modules()
                                         if m.startswith(FRONT_ENDS)],
                         ids=[m for m, _ in _modules() if m.startswith(FRONT_ENDS)])
def test_front_ends_use_public_names(module: str, path: Path) -> None:
    assert not _private_uses(path), f"{module} reaches into private names"


def test_every_package_has_rules() -> None:
    """A new package must get its arrows here, not slip past the test."""
    packages = {".".join(p.relative_to(SRC.parent).parts[:2])
                for p in SRC.rglob("*.py") if len(p.relative_to(SRC).parts) > 1}
    missing = [p for p in sorted(packages) if not any(
        p == k or p.startswith(k + ".") or k.startswith(p + ".") for k in FORBIDDEN)
        and p not in FRONT_ENDS and p != "vfioctl.cli"]
    assert not missing, f"packages without layering rules: {missing}"
