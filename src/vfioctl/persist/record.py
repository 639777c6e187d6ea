"""Making entries: what ``detach --persist`` and ``persist sriov`` write.

An entry is made from the device as the host shows it once the detach ran — its ids and
its group's members — so the configuration describes exactly the hardware the user
looked at. Which devices get entries is the manager's planner's answer (the group rule,
``--group``, the members left alone on pcieport/pci-stub), never re-derived here: every
device of the plan that ends on the wanted driver is persisted, and the members left
alone are recorded as members only.

Everything that could refuse is checked *before* the detach (:func:`check_persistable`),
so a refused ``--persist`` changes nothing at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from vfioctl.address import PciAddress
from vfioctl.errors import NotFound, OperationInvalid
from vfioctl.host.base import Host
from vfioctl.manager import ActionKind, HostdevManager, Plan
from vfioctl.pci.device import PciDevice, get_device
from vfioctl.persist import boot, store
from vfioctl.persist.check import group_members
from vfioctl.persist.config import Config, Entry
from vfioctl.persist.paths import EtcPaths
from vfioctl.state.db import now

_KEPT = (ActionKind.DETACHED, ActionKind.ALREADY, ActionKind.CLAIMED)


def targets(plan: Plan) -> list[PciAddress]:
    """The devices of a detach plan that end on its driver: the ones to persist."""
    return list(dict.fromkeys(a.addr for a in plan.actions if a.kind in _KEPT))


def check_persistable(host: Host, paths: EtcPaths, plan: Plan) -> Config:
    """Refuse, before anything changes, what cannot be persisted; return the current
    configuration (which must parse: it is rewritten afterwards).

    Raises:
        OperationInvalid: a VF among the devices (VFs do not exist at boot); the plan's
            own refusal. ConfigError: the configuration does not parse.
    """
    plan.check()
    for addr in targets(plan):
        pf = PciDevice(host, addr).physfn
        if pf is not None:
            raise OperationInvalid(
                f"cannot persist {addr}: it is a VF of {pf}, and VFs do not exist at boot",
                hint=f"persist the PF instead ('vfioctl detach {pf} --persist', then "
                f"'vfioctl persist sriov {pf} --numvfs N')")
    return store.load(paths)


def entry_for(host: Host, addr: PciAddress, driver: str) -> Entry:
    """The entry for ``addr`` as the host shows it now."""
    dev = get_device(host, addr)
    members = group_members(dev)
    me = next(m for m in members if m.address == addr)
    return Entry(addr, me.id, me.subsystem, driver, dev.iommu_group, members,
                 persisted_at=now())


def persist_detached(host: Host, paths: EtcPaths, config: Config, plan: Plan,
                     driver: str) -> list[Entry]:
    """Write the entries of a detach that ran (keeping an existing entry's opt-ins)."""
    made: list[Entry] = []
    for addr in targets(plan):
        entry = entry_for(host, addr, driver)
        old = config.get(addr)
        if old is not None and old.driver == driver:
            entry = Entry(entry.address, entry.id, entry.subsystem, driver,
                          entry.iommu_group, entry.members, old.numvfs, old.token,
                          entry.persisted_at)
        config = config.with_entry(entry)
        made.append(entry)
    store.save(paths, config)
    boot.refresh(paths, config)
    return made


def set_sriov(mgr: HostdevManager, paths: EtcPaths, pf: PciAddress,
              numvfs: int | None, token: bool | None) -> Entry:
    """Persist a PF's VF count (``0``: none) and/or its current VF token.

    ``numvfs`` None keeps what is persisted; ``token`` True copies the token the runtime
    store holds now (it must be current), False forgets the persisted one.

    Raises:
        NotFound: the PF is not persisted. OperationInvalid: not an SR-IOV PF persisted
            on vfio-pci, or more VFs than it supports. TokenNotFound / TokenStale.
    """
    config = store.load(paths)
    entry = config.get(pf)
    if entry is None:
        raise NotFound(f"{pf} is not persisted",
                       hint=f"persist it first: 'vfioctl detach {pf} --persist'")
    if entry.driver != "vfio-pci":
        raise OperationInvalid(f"cannot persist VFs or a token for {pf}: it is persisted "
                               f"on {entry.driver}", hint="VFs and VF tokens need a PF "
                               "on vfio-pci")
    dev = get_device(mgr.host, pf)
    total = dev.sriov_totalvfs
    if total is None:
        raise OperationInvalid(f"cannot persist VFs or a token for {pf}: it is not an "
                               "SR-IOV PF", hint="name the PF (see 'vfioctl sriov')")
    new_numvfs = entry.numvfs
    if numvfs is not None:
        if numvfs > total:
            raise OperationInvalid(f"cannot persist {numvfs} VFs for {pf}: it supports "
                                   f"{total}", hint=f"use --numvfs 1..{total}")
        new_numvfs = numvfs or None
    new_token = entry.token
    if token is True:
        value = mgr.get_token(pf)
        store.save_token(paths, pf, value, now())
        new_token = True
    elif token is False:
        store.tokens(paths).remove(pf)
        new_token = False
    entry = Entry(entry.address, entry.id, entry.subsystem, entry.driver,
                  entry.iommu_group, entry.members, new_numvfs, new_token,
                  entry.persisted_at)
    config = config.with_entry(entry)
    store.save(paths, config)
    boot.refresh(paths, config)
    return entry


def remove(paths: EtcPaths, addrs: Sequence[PciAddress]) -> list[Entry]:
    """Forget persisted entries (and their persisted tokens).

    Raises:
        NotFound: an address is not persisted (nothing is removed then).
    """
    config = store.load(paths)
    gone = []
    for addr in dict.fromkeys(addrs):
        entry = config.get(addr)
        if entry is None:
            raise NotFound(f"{addr} is not persisted",
                           hint="'vfioctl persist list' shows what is")
        gone.append(entry)
    config = config.without({e.address for e in gone})
    store.save(paths, config)
    for e in gone:
        if e.token:
            store.tokens(paths).remove(e.address)
    boot.refresh(paths, config)
    return gone


__all__ = ["check_persistable", "entry_for", "persist_detached", "remove", "set_sriov",
           "targets"]
