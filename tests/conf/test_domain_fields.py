"""conf: the typed domain fields (memory, vCPUs, PCI controllers) and the refusals that
keep vfioctl from reading less of a document than libvirt does.

Expected values are libvirt 9.0.0's (``virsh -c test:///default define`` + ``dumpxml``
on the same snippets), not vfioctl's own output.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vfioctl.conf import load_domain, parse_string, validate_domain
from vfioctl.conf.hostdev import GuestPciAddress
from vfioctl.errors import ConfigError, XmlError
from vfioctl.launch.plan import plan_start
from vfioctl.qemu.caps import caps_for_version

DATA = Path(__file__).parent / "data"
HOSTDEV = ("<hostdev mode='subsystem' type='pci' managed='yes'><source>"
           "<address domain='0' bus='3' slot='0' function='0'/></source>{extra}</hostdev>")


def domain(top: str = "", devices: str = "", prolog: str = "") -> str:
    return (f"{prolog}<domain type='kvm'>\n<name>d</name>\n{top}\n"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
            f"<devices>\n{devices}\n</devices>\n</domain>\n")


def parse(text: str) -> object:
    doc = parse_string(text, filename="d.xml")
    validate_domain(doc.domain)
    return doc.domain


# -- memory ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("memory", "kib"), [
    ("<memory>65536</memory>", 65536),
    ("<memory unit='MiB'>64</memory>", 65536),
    ("<memory unit='KIB'>1</memory>", 1),
    ("<memory unit='byte'>1025</memory>", 2),          # rounded up to whole KiB
    ("<memory unit='Kb'>1</memory>", 1),               # 1000 bytes
    ("<memory unit='PiB'>1</memory>", 1099511627776),
    ("<memory unit='EiB'>1</memory>", 1125899906842624),
    ("<memory unit=''>5</memory>", 5),
    ("<memory> 64</memory>", 64),
    ("<memory>+64</memory>", 64),
    ("<memory>6<!-- c -->4</memory>", 64),             # the XPath string value
    ("<memory>9007199254740991</memory>", 9007199254740991),
    ("<memory unit='b'>9223372036854774784</memory>", 9007199254740991),
])
def test_memory_in_kib(memory: str, kib: int) -> None:
    mem = parse(domain(memory)).memory  # type: ignore[attr-defined]
    assert mem is not None and mem.kib == kib


@pytest.mark.parametrize(("memory", "message"), [
    ("<memory>0x10</memory>", "invalid <memory> '0x10'"),
    ("<memory>64 </memory>", "invalid <memory> '64 '"),
    ("<memory>-1</memory>", "invalid <memory> '-1'"),
    ("<memory unit='MiB'>6²</memory>", "invalid <memory> '6²'"),
    ("<memory>１２</memory>", "invalid <memory> '１２'"),
    ("<memory>" + "9" * 5000 + "</memory>", "invalid <memory> '999"),
    ("<memory unit=' k'>7</memory>", "invalid <memory> unit ' k'"),
    ("<memory>9007199254740992</memory>", "too large"),
    ("<memory unit='b'>9223372036854774785</memory>", "too large"),
    ("<memory unit='EiB'>8</memory>", "too large"),
])
def test_memory_refused_with_its_line(memory: str, message: str) -> None:
    with pytest.raises(XmlError, match=r"^d\.xml:3: ") as err:
        parse(domain(memory))
    assert message in str(err.value)


def test_memory_absent_or_empty_is_none() -> None:
    assert parse(domain("")).memory is None  # type: ignore[attr-defined]
    assert parse(domain("<memory unit='MiB'></memory>")).memory is None  # type: ignore[attr-defined]


# -- vcpu ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("vcpu", "count"), [
    ("", 1), ("<vcpu>2</vcpu>", 2), ("<vcpu> 2</vcpu>", 2), ("<vcpu>+2</vcpu>", 2),
    ("<vcpu>02</vcpu>", 2), ("<vcpu placement='static' current='1'>4</vcpu>", 4),
    ("<vcpu current='0'>2</vcpu>", 2), ("<vcpu>2<x/></vcpu>", 2),
])
def test_vcpus(vcpu: str, count: int) -> None:
    assert parse(domain(vcpu)).vcpus == count  # type: ignore[attr-defined]


@pytest.mark.parametrize(("vcpu", "message"), [
    ("<vcpu>0</vcpu>", "invalid <vcpu> '0'"),
    ("<vcpu>2 </vcpu>", "invalid <vcpu> '2 '"),
    ("<vcpu>0x2</vcpu>", "invalid <vcpu> '0x2'"),
    ("<vcpu>-1</vcpu>", "invalid <vcpu> '-1'"),  # libvirt 9.0 reads it as 4294967295
    ("<vcpu>4294967297</vcpu>", "invalid <vcpu>"),
    ("<vcpu></vcpu>", "invalid <vcpu> ''"),
    ("<vcpu>4²</vcpu>", "invalid <vcpu> '4²'"),
    ("<vcpu current='x'>2</vcpu>", "Invalid value for attribute 'current' in element 'vcpu'"),
    ("<vcpu current='3'>2</vcpu>", "maximum vCPU count must not be less than current"),
])
def test_vcpu_refused(vcpu: str, message: str) -> None:
    with pytest.raises(XmlError, match=r"^d\.xml:3: ") as err:
        parse(domain(vcpu))
    assert message in str(err.value)


# -- PCI controllers -------------------------------------------------------------------------
def test_pci_controller_fields() -> None:
    dom = parse(domain(devices=(
        "<controller type='pci' index='0' model='pci-root'/>"
        "<controller type='pci' index='01' model='pcie-root-port'>"
        "<target chassis=' 3' port='0x10'/><alias name='ua-rp'/>"
        "<address type='pci' domain='0' bus='0' slot='2' function='1' multifunction='on'/>"
        "</controller>"
        "<controller type='pci' index='010' model='pci-bridge'><alias name='pci.9'/>"
        "<target chassisNr='010'/></controller>")))
    root, port, bridge = dom.controllers  # type: ignore[attr-defined]
    assert (root.index, root.model, root.address) == (0, "pci-root", None)
    assert (port.index, port.chassis, port.port, port.chassis_nr) == (1, 3, 0x10, None)
    assert port.address == GuestPciAddress(0, 0, 2, 1, True)
    assert port.bus_id == "ua-rp"
    # index is decimal (libvirt's base 10); <target> numbers are base 0 (010 is 8)
    assert (bridge.index, bridge.chassis_nr) == (10, 8)
    assert bridge.bus_id == "pci.10"  # libvirt drops an alias without 'ua-'


@pytest.mark.parametrize(("controller", "message"), [
    ("<controller type='pci' index='0x1'/>",
     "Invalid value for attribute 'index' in element 'controller': '0x1'. Expected integer"),
    ("<controller type='usb' index='1 '/>",
     "Invalid value for attribute 'index' in element 'controller': '1 '. Expected integer"),
    ("<controller type='pci' index='-1'/>", "'-1'. Expected non-negative value"),
    ("<controller type='pci' index='2147483648'/>", "'2147483648'. Expected integer value"),
    ("<controller type='pci' index='1'><target port='-1'/></controller>",
     "Invalid value for attribute 'port' in element 'target': '-1'. Expected non-negative"),
    ("<controller type='pci' index='1'><target chassisNr='4294967296'/></controller>",
     "'chassisNr' in element 'target': '4294967296'. Expected integer value"),
    ("<controller type='pci' index='1'/><controller type='pci' index='01'/>",
     "Multiple 'pci' controllers with index '1'"),
    ("<controller type='pci' index='1'><target/><target/></controller>",
     "element <target> appears twice in <controller>"),
])
def test_controller_refused(controller: str, message: str) -> None:
    with pytest.raises(XmlError, match=r"^d\.xml:6: ") as err:
        parse(domain(devices=controller))
    assert message in str(err.value)


# -- singletons, entities, namespaces ---------------------------------------------------------
@pytest.mark.parametrize(("top", "devices", "line", "element", "where"), [
    ("", "</devices>\n<devices>" + HOSTDEV.format(extra=""), 7, "devices", "<domain>"),
    ("<memory>64</memory>\n<memory>128</memory>", "", 4, "memory", "<domain>"),
    ("<vcpu>1</vcpu>\n<vcpu>3</vcpu>", "", 4, "vcpu", "<domain>"),
    ("<name>e</name>", "", 3, "name", "<domain>"),
    ("<os><type>hvm</type></os>", "", 4, "os", "<domain>"),
    ("", "<emulator>/a</emulator>\n<emulator>/b</emulator>", 7, "emulator", "<devices>"),
    ("", "<interface type='network'><boot order='1'/>\n<boot order='2'/></interface>", 7,
     "boot", "<interface>"),
    ("", "<video><model type='vga'/>\n<model type='qxl'/></video>", 7, "model", "<video>"),
])
def test_second_singleton_refused_at_its_line(top: str, devices: str, line: int,
                                              element: str, where: str) -> None:
    with pytest.raises(XmlError) as err:
        parse(domain(top, devices))
    assert str(err.value).startswith(f"d.xml:{line}: element <{element}> appears twice "
                                     f"in {where}")


def test_hostdevs_of_a_second_devices_never_vanish(tmp_path: Path) -> None:
    src = tmp_path / "g.xml"
    src.write_text(domain(devices="</devices><devices>" + HOSTDEV.format(extra="")))
    with pytest.raises(XmlError, match="element <devices> appears twice"):
        load_domain(src)


@pytest.mark.parametrize("prolog", [
    "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>\n",
    "<!DOCTYPE domain [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]>\n",
    "<!DOCTYPE domain [<!ENTITY hd \"<hostdev mode='subsystem' type='pci'/>\">]>\n",
])
def test_entity_declarations_refused(prolog: str) -> None:
    with pytest.raises(XmlError, match="declares the XML entity"):
        parse(domain(prolog=prolog))


def test_entity_bomb_refused_by_the_parser() -> None:
    levels = zip("abcdefg", "bcdefgh", strict=True)
    bomb = "<!DOCTYPE domain [<!ENTITY a 'aaaaaaaaaa'>" + "".join(
        f"<!ENTITY {b} '{('&' + a + ';') * 10}'>" for a, b in levels)
    with pytest.raises(XmlError):
        parse(domain("<description>&h;</description>", prolog=bomb + "]>\n"))


def test_undeclared_entity_with_an_external_dtd_refused() -> None:
    # The DTD is not loaded (no network, no file): the reference stays unresolved.
    text = domain("<description>&x;</description>",
                  prolog="<!DOCTYPE domain SYSTEM 'file:///etc/passwd'>\n")
    with pytest.raises(XmlError, match=r"d\.xml:4: entity reference '&x;' cannot be"):
        parse(text)


def test_doctype_without_entities_is_fine() -> None:
    assert parse(domain(prolog="<!DOCTYPE domain [<!-- ]> -->]>\n")).name == "d"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("devices", "element"), [
    ("<hostdev xmlns='urn:x' mode='subsystem' type='pci'/>", "hostdev"),
    ("<x:interface xmlns:x='urn:x' type='network'/>", "interface"),
])
def test_foreign_namespace_devices_refused(devices: str, element: str) -> None:
    with pytest.raises(XmlError, match=f"element <{element}> in XML namespace 'urn:x'"):
        parse(domain(devices=devices))


def test_foreign_namespace_devices_element_refused() -> None:
    text = domain().replace("<devices>", "<devices xmlns='urn:x'>")
    with pytest.raises(XmlError, match="element <devices> in XML namespace 'urn:x'"):
        parse(text)


def test_other_namespaced_metadata_is_fine() -> None:
    text = domain("<q:commandline xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'/>")
    assert parse(text).name == "d"  # type: ignore[attr-defined]


# -- values ending in a newline ----------------------------------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    ("<alias name='ua-x&#10;'/>", "is not a user alias"),
    ("<boot order='1&#10;'/>", "Invalid value for attribute 'order' in element 'boot'"),
])
def test_trailing_newline_in_hostdev_values(extra: str, message: str) -> None:
    with pytest.raises(XmlError, match=message):
        parse(domain(devices=HOSTDEV.format(extra=extra)))


def test_vf_token_with_trailing_newline_is_malformed_and_not_echoed() -> None:
    token = "bd3c9d7a-2fbb-4c1e-9c2e-6b6a2f3c1d10"
    hd = HOSTDEV.replace("function='0'/>", f"function='0'><vf-token uuid='{token}&#10;'/>"
                         "</address>").format(extra="")
    with pytest.raises(XmlError, match="malformed vf-token uuid") as err:
        parse(domain(devices=hd))
    assert token not in str(err.value)


def test_huge_address_value_is_one_clean_error() -> None:
    hd = HOSTDEV.replace("bus='3'", "bus='" + "1" * 5000 + "'").format(extra="")
    with pytest.raises(XmlError, match="Cannot parse <address> 'bus' attribute"):
        parse(domain(devices=hd))


def test_out_of_range_address_is_shown_in_hex_like_libvirt() -> None:
    hd = HOSTDEV.replace("bus='3'", "bus='4294967295'").format(extra="")
    with pytest.raises(XmlError, match=r"Invalid PCI address bus='0xffffffff', must be "
                       r"<= 0xFF"):
        parse(domain(devices=hd))


# -- start reads the typed model, not the tree --------------------------------------------------
def test_plan_start_needs_no_xml_tree() -> None:
    doc = parse_string((DATA / "fuzz-pc.xml").read_bytes(), filename="fuzz-pc.xml")
    treeless = dataclasses.replace(doc, tree=None, hostdev_elements=())
    plan = plan_start(treeless, caps_for_version("8.1"), binary="qemu", state_dir=Path("/s"),
                      untranslated="ignore")  # the interface, usb controller, vcpu current
    argv = list(plan.argv)
    assert argv[argv.index("-m") + 1] == "65536k"
    assert argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-accel") + 1] == "kvm"
    bridge = argv[argv.index("-device") + 1]
    assert bridge == ('{"driver":"pci-bridge","chassis_nr":1,"id":"ua-br1","bus":"pci.0",'
                      '"addr":"0x4"}')


def test_start_and_validate_agree_on_a_zero_padded_controller_index() -> None:
    text = (DATA / "fuzz-pc.xml").read_text().replace("index='1' model='pci-bridge'",
                                                      "index='01' model='pci-bridge'")
    doc = parse_string(text, filename="g.xml")
    validate_domain(doc.domain)
    plan = plan_start(doc, caps_for_version("8.1"), binary="qemu", state_dir=Path("/s"),
                      untranslated="ignore")
    assert any('"id":"ua-br1"' in a for a in plan.argv)


def test_zero_memory_is_refused_by_start_only() -> None:
    doc = parse_string(domain("<memory>0</memory>"), filename="d.xml")
    validate_domain(doc.domain)  # validate needs no <memory> at all; start does
    with pytest.raises(ConfigError, match=r"d\.xml:3: <memory> must be positive"):
        plan_start(doc, caps_for_version("8.1"), binary="qemu", state_dir=Path("/s"))
