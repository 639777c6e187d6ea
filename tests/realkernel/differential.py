"""The differential test's bookkeeping: the real kernel and the simulated twin compared
at named checkpoints of the scenarios.

At each checkpoint the product's documents (``list``/``groups``, built by the same
library calls the CLI prints) are computed on both hosts, and the kernel-level verdict
``VFIO_GROUP_GET_STATUS`` is read on both for every ``/dev/vfio/N``. Findings are kept,
not raised: a difference is a simulator bug, reported by test_90_differential with the
checkpoint, the object and both values, while the scenario itself goes on judging the
real kernel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .guest_kernel import GuestKernel


@dataclass
class Differential:
    kernel: GuestKernel
    findings: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.kernel.twin is not None

    def checkpoint(self, name: str) -> None:
        """Compare both hosts now; record every difference under ``name``."""
        twin = self.kernel.twin
        if twin is None:
            return
        from vfioctl.host.linux import LinuxHost
        from vfioctl.inventory import group_records, list_records

        self.checkpoints.append(name)
        live = LinuxHost("/")
        for what, build in (("list", list_records), ("groups", group_records)):
            real, sim = _norm(build(live)), _norm(build(twin.fs))  # type: ignore[arg-type]
            key = "address" if what == "list" else "group"
            self.findings += [f"{name}: {what} {d}" for d in _diff_docs(real, sim, key)]
        nodes = sorted(set(self.kernel.vfio_group_nodes()) | set(twin.vfio_group_nodes()))
        for g in nodes:
            real_s, sim_s = _status(self.kernel, g), _status(twin, g)
            if real_s != sim_s:
                self.findings.append(f"{name}: GROUP_GET_STATUS /dev/vfio/{g}: "
                                     f"kernel {real_s}, simulator {sim_s}")

    def report(self) -> list[str]:
        steps = [f"step {d}" for d in self.kernel.divergences]
        return steps + self.findings


def _norm(doc: Any) -> Any:
    return json.loads(json.dumps(doc))


def _status(kernel: GuestKernel, group: int) -> str:
    try:
        return f"flags={kernel.group_status(group):#x}"
    except OSError as err:
        return f"errno {err.errno}"


def _diff_docs(real: list[dict[str, Any]], sim: list[dict[str, Any]], key: str) -> list[str]:
    by_real = {r[key]: r for r in real}
    by_sim = {s[key]: s for s in sim}
    out = [f"{k}: only in the kernel" for k in by_real if k not in by_sim]
    out += [f"{k}: only in the simulator" for k in by_sim if k not in by_real]
    for k in by_real.keys() & by_sim.keys():
        r, s = by_real[k], by_sim[k]
        for field_name in sorted(r.keys() | s.keys()):
            if r.get(field_name) != s.get(field_name):
                out.append(f"{k}.{field_name}: kernel {r.get(field_name)!r}, "
                           f"simulator {s.get(field_name)!r}")
    if [r[key] for r in real] != [s[key] for s in sim] and not out:
        out.append("same elements in a different order")
    return sorted(out)
