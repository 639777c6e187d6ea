"""Config: the PCI ``<hostdev>`` model and what vfioctl needs to know about a domain.

Frozen dataclasses, no I/O. Names follow libvirt's XML vocabulary (``managed``,
``driver_name``, ``rom_bar``); translation to QEMU spelling happens in ``qemu/props.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from vfioctl.address import PciAddress
from vfioctl.secret import VfToken


@dataclass(frozen=True, slots=True)
class Location:
    """Where an element came from, for messages: ``file:line``."""

    file: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True, slots=True)
class GuestPciAddress:
    """``<address type='pci' …/>``: where the device sits in the guest.

    ``multifunction`` is libvirt's tristate: None (absent), True ('on'), False ('off').
    Values are not range-checked here (``validate`` does that with libvirt's messages).
    """

    domain: int
    bus: int
    slot: int
    function: int
    multifunction: bool | None = None

    @property
    def slot_key(self) -> tuple[int, int, int]:
        return (self.domain, self.bus, self.slot)

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


@dataclass(frozen=True, slots=True)
class RomDef:
    """``<rom bar='on|off' file='…' enabled='yes|no'/>``; None means the attribute is absent."""

    bar: bool | None = None
    file: str | None = None
    enabled: bool | None = None


class StoredTokenRef:
    """``<vf-token/>`` without a ``uuid``: "the token vfioctl holds for this VF's PF".

    The domain XML then holds no secret; whoever starts the guest resolves the reference
    from vfioctl's token store (:func:`vfioctl.hostcheck.resolve_vf_tokens`) and hands
    the token to QEMU over QMP only. There is one instance, :data:`FROM_STORE`.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "FROM_STORE"


FROM_STORE: Final = StoredTokenRef()

#: libvirt's ``<launchSecurity type>`` values (src/conf/domain_conf.h,
#: virDomainLaunchSecurity): each makes a confidential guest.
LAUNCH_SECURITY_TYPES: Final = frozenset({"sev", "sev-snp", "tdx", "s390-pv"})


@dataclass(frozen=True, slots=True)
class HostdevDef:
    """One ``<hostdev mode='subsystem' type='pci'>``.

    ``driver_name`` is None when ``<driver>`` is absent (libvirt then picks VFIO);
    ``driver_group`` is vfioctl's ``group='allow'`` extension (docs/rationale.md "The
    IOMMU-group rule"; never merged upstream). ``driver_model`` is libvirt ≥ 10.0's
    ``<driver model>``, the host driver to bind; vfioctl binds vfio-pci, so it is None
    or ``'vfio-pci'`` (:mod:`vfioctl.conf.dialect`). ``vf_token`` is the hostdev's VF token:
    a :class:`~vfioctl.secret.VfToken` written in the file (``<vf-token uuid='…'/>``,
    a secret in clear), :data:`FROM_STORE` (``<vf-token/>``: the token vfioctl holds for
    the VF's PF, resolved from the host at the last moment), or None.
    """

    source: PciAddress
    managed: bool = False
    driver_name: str | None = None
    driver_group: str | None = None
    driver_model: str | None = None
    vf_token: VfToken | StoredTokenRef | None = field(default=None, repr=False)
    boot_order: int | None = None
    alias: str | None = None
    rom: RomDef | None = None
    guest_address: GuestPciAddress | None = None
    where: Location | None = field(default=None, compare=False)

    @property
    def group_allow(self) -> bool:
        return self.driver_group == "allow"

    @property
    def token_inline(self) -> bool:
        """The VF token is written in the file (``uuid``): a secret in clear."""
        return isinstance(self.vf_token, VfToken)

    @property
    def token_from_store(self) -> bool:
        return isinstance(self.vf_token, StoredTokenRef)


@dataclass(frozen=True, slots=True)
class PciControllerDef:
    """``<controller type='pci' index='N' model='…'>``: a guest PCI bus by its index.

    ``index`` is None when the attribute is absent (libvirt then assigns one).
    ``address`` is the controller's own ``<address type='pci'>`` (None without one, or
    with another address type); ``chassis_nr``, ``chassis`` and ``port`` are its
    ``<target>`` attributes, None when absent.
    """

    index: int | None
    model: str | None
    alias: str | None = None
    address: GuestPciAddress | None = None
    chassis_nr: int | None = None
    chassis: int | None = None
    port: int | None = None
    where: Location | None = field(default=None, compare=False)

    @property
    def bus_id(self) -> str:
        """The QEMU id of the bus it provides: its user alias (``ua-…``), else
        ``pci.INDEX`` (libvirt drops any other alias from a definition)."""
        if self.alias is not None and self.alias.startswith("ua-"):
            return self.alias
        return f"pci.{self.index}"


@dataclass(frozen=True, slots=True)
class MemoryDef:
    """``<memory unit='…'>N</memory>`` in KiB, rounded up as libvirt does."""

    kib: int
    where: Location | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class OtherDeviceDef:
    """A device vfioctl does not model, summarised for PCI address assignment.

    ``tag`` is the element name (``interface``, ``disk`` …), ``kind`` its ``type``
    attribute, ``model`` its model (attribute or ``<model type>`` child), ``bus`` and
    ``target_type`` its ``<target bus>``/``<target type>``; ``pci_address`` its
    explicit guest PCI address if any.
    """

    tag: str
    kind: str | None = None
    model: str | None = None
    bus: str | None = None
    target_type: str | None = None
    pci_address: GuestPciAddress | None = None
    has_address: bool = False
    boot_order: int | None = None
    alias: str | None = None
    where: Location | None = field(default=None, compare=False)
    #: the device element's own attributes, in document order (``vfioctl start`` tells
    #: the devices QEMU has built in, e.g. ``<input type='mouse' bus='ps2'>``, from
    #: those it would have to create)
    attrs: tuple[tuple[str, str], ...] = ()

    def attr(self, name: str) -> str | None:
        return dict(self.attrs).get(name)


@dataclass(frozen=True, slots=True)
class ElementDef:
    """An element of ``<domain>`` outside ``<devices>``, as written: its name
    (``prefix:name`` in a namespace), attributes, stripped text and child elements.

    vfioctl reads a few of these into typed fields (``<memory>``, ``<vcpu>``, the
    machine); the mirror exists so that ``vfioctl start`` can refuse what it does not
    translate (``<cpu>``, ``<os firmware='efi'>``, ``<clock>`` timers …) by name and
    line, without keeping the XML tree.
    """

    tag: str
    attrs: tuple[tuple[str, str], ...] = ()
    text: str = ""
    children: tuple[ElementDef, ...] = ()
    where: Location | None = field(default=None, compare=False)

    def attr(self, name: str) -> str | None:
        return dict(self.attrs).get(name)


@dataclass(frozen=True, slots=True)
class DomainDef:
    """The parts of a ``<domain>`` that vfioctl reads; the document itself is kept apart.

    ``domain_type`` is ``<domain type>``; ``memory`` is None without a ``<memory>`` (or
    with an empty one); ``vcpus`` is ``<vcpu>``, 1 when absent as in libvirt;
    ``launch_security`` is ``<launchSecurity type>`` (a confidential guest) or None;
    ``elements`` mirrors every child of ``<domain>`` but ``<devices>``, in order.
    """

    name: str | None
    file: str
    domain_type: str | None = None
    arch: str | None = None
    machine: str | None = None
    emulator: str | None = None
    os_boot: bool = False
    memory: MemoryDef | None = None
    vcpus: int = 1
    hostdevs: tuple[HostdevDef, ...] = ()
    controllers: tuple[PciControllerDef, ...] = ()
    others: tuple[OtherDeviceDef, ...] = ()
    launch_security: str | None = None
    elements: tuple[ElementDef, ...] = ()

    @property
    def confidential(self) -> bool:
        """A guest whose memory and state the host may not see (SEV, SEV-SNP, TDX, s390
        protected virtualization): what it is given must be trustworthy without the
        host's word for it."""
        return self.launch_security is not None

    @property
    def machine_family(self) -> str:
        """``pc`` (i440fx, also the default), ``q35``, or the machine name itself."""
        m = self.machine or "pc"
        if m == "pc" or m.startswith("pc-i440fx") or (m.startswith("pc-") and "q35" not in m):
            return "pc"
        if m == "q35" or m.startswith("pc-q35"):
            return "q35"
        return m
