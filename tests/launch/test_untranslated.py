"""``start`` refuses what it does not translate, by name and line, unless told to ignore it.

Each untranslated case is one element added to a domain start accepts; the error must
name that element and the line it is on, and ``untranslated='ignore'`` must plan the
same domain. The harmless cases (metadata, defaults QEMU has anyway) must plan as is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vfioctl.conf import parse_string
from vfioctl.errors import ConfigError, UnsupportedConfig
from vfioctl.launch.plan import plan_start
from vfioctl.qemu.caps import caps_for_version

CAPS = caps_for_version("8.1")


def _doc(top: str = "", devices: str = "", machine: str = "q35", os_extra: str = "",
         os_attrs: str = "") -> str:
    # line 1 <domain>, 2 <name>, 3 <memory>, 4 <vcpu>, 5 <os…>, then ``top`` from line 6
    return (f"<domain type='qemu'>\n<name>u</name>\n<memory unit='MiB'>64</memory>\n"
            f"<vcpu>2</vcpu>\n<os{os_attrs}><type arch='x86_64' machine='{machine}'>hvm"
            f"</type>{os_extra}</os>\n{top}<devices>\n{devices}</devices>\n</domain>\n")


def _plan(text: str, mode: str = "refuse") -> list[str]:
    return list(plan_start(parse_string(text, filename="g.xml"), CAPS, binary="qemu",
                           state_dir=Path("/s"), untranslated=mode).argv)  # type: ignore[arg-type]


UNTRANSLATED = [
    # (document, what the error names, line)
    (_doc(os_attrs=" firmware='efi'"), "<os firmware='efi'>", 5),
    (_doc(os_extra="<loader readonly='yes' type='pflash'>/x.fd</loader>"), "<loader> in <os>", 5),
    (_doc(os_extra="<boot dev='hd'/>"), "<boot> in <os>", 5),
    (_doc("<cpu mode='host-passthrough'/>\n"), "<cpu>", 6),
    (_doc("<clock offset='localtime'/>\n"), "<clock offset='localtime'>", 6),
    (_doc("<clock offset='utc'>\n<timer name='hpet' present='no'/>\n</clock>\n"),
     "<timer> in <clock>", 7),
    (_doc("<features><acpi/><hyperv mode='passthrough'/></features>\n"),
     "<hyperv> in <features>", 6),
    (_doc("<on_crash>preserve</on_crash>\n"), "<on_crash>preserve</on_crash>", 6),
    (_doc("<memoryBacking><hugepages/></memoryBacking>\n"), "<memoryBacking>", 6),
    (_doc("<currentMemory unit='MiB'>32</currentMemory>\n"), "<currentMemory> smaller", 6),
    (_doc("<launchSecurity type='sev'/>\n"), "<launchSecurity>", 6),
    (_doc("<seclabel type='dynamic' model='apparmor'/>\n"), "<seclabel>", 6),
    (_doc("<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
          "<qemu:arg value='-S'/></qemu:commandline>\n"), "<qemu:commandline>", 6),
    (_doc(devices="<disk type='file' device='disk'><source file='/d.img'/>"
          "<target dev='vda' bus='virtio'/></disk>\n"), "<disk device='disk'>", 7),
    (_doc(devices="<interface type='network'><source network='default'/></interface>\n"),
     "<interface type='network'>", 7),
    (_doc(devices="<graphics type='vnc'/>\n"), "<graphics type='vnc'>", 7),
    (_doc(devices="<console type='pty'/>\n"), "<console type='pty'>", 7),
    (_doc(devices="<controller type='usb' index='0' model='qemu-xhci'/>\n"),
     "<controller type='usb' model='qemu-xhci'>", 7),
    (_doc(devices="<memballoon model='virtio'/>\n"), "<memballoon>", 7),
    (_doc(devices="<input type='tablet' bus='usb'/>\n"), "<input type='tablet'>", 7),
    (_doc(devices="<controller type='pci' index='1' model='pcie-to-pci-bridge'/>\n"),
     "<controller type='pci' model='pcie-to-pci-bridge'>", 7),
]


@pytest.mark.parametrize("text,what,line", UNTRANSLATED, ids=[u[1] for u in UNTRANSLATED])
def test_untranslated_element_is_refused_by_name_and_line(text: str, what: str,
                                                          line: int) -> None:
    with pytest.raises(ConfigError) as err:
        _plan(text)
    assert not isinstance(err.value, UnsupportedConfig)
    message = str(err.value)
    assert message.startswith(f"g.xml:{line}: {what}"), message
    assert "is not translated by vfioctl start" in message and "\n" not in message
    assert "--ignore-untranslated" in (err.value.hint or "")
    argv = _plan(text, "ignore")  # the user passes it after '--': planned as without it
    assert argv == _plan(_doc()), argv


HARMLESS = [
    "<uuid>6c1f3b52-8e0a-4b1e-a3f4-2f7d4c5e9a01</uuid>\n<title>t</title>\n"
    "<description>d</description>\n<metadata><x xmlns='urn:x'/></metadata>\n",
    "<currentMemory unit='KiB'>65536</currentMemory>\n",
    "<features><acpi/><apic/><pae/></features>\n<clock offset='utc'/>\n",
    "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
    "<on_crash>destroy</on_crash>\n",
    "<seclabel type='none'/>\n",
]


@pytest.mark.parametrize("top", HARMLESS)
def test_harmless_elements_plan_as_if_absent(top: str) -> None:
    assert _plan(_doc(top)) == _plan(_doc())


def test_built_in_devices_are_not_untranslated() -> None:
    devices = ("<controller type='sata' index='0'/>\n<controller type='usb' model='none'/>\n"
               "<controller type='pci' index='0' model='pcie-root'/>\n"
               "<input type='mouse' bus='ps2'/>\n<input type='keyboard' bus='ps2'/>\n"
               "<audio id='1' type='none'/>\n<memballoon model='none'/>\n")
    assert _plan(_doc(devices=devices)) == _plan(_doc())
    ide = "<controller type='ide' index='0'/>\n"
    assert _plan(_doc(devices=ide, machine="pc")) == _plan(_doc(machine="pc"))
    with pytest.raises(ConfigError, match="<controller type='ide'>"):
        _plan(_doc(devices=ide))  # q35 has no IDE controller


def test_vcpu_current_and_pinning_are_untranslated() -> None:
    same = _doc().replace("<vcpu>2</vcpu>", "<vcpu placement='static' current='2'>2</vcpu>")
    assert _plan(same) == _plan(_doc())
    for vcpu, what in (("<vcpu current='1'>2</vcpu>", "<vcpu current='1'>"),
                       ("<vcpu cpuset='0-1'>2</vcpu>", "<vcpu cpuset='0-1'>"),
                       ("<vcpu placement='auto'>2</vcpu>", "<vcpu placement='auto'>")):
        with pytest.raises(ConfigError, match=f"g.xml:4: {what}"):
            _plan(_doc().replace("<vcpu>2</vcpu>", vcpu))


def test_every_untranslated_element_is_counted_in_one_line() -> None:
    text = _doc("<cpu mode='host-model'/>\n",
                "<disk type='file' device='cdrom'/>\n<graphics type='spice'/>\n")
    with pytest.raises(ConfigError) as err:
        _plan(text)
    assert str(err.value) == ("g.xml:6: <cpu> is not translated by vfioctl start (and 2 "
                              "more: <disk device='cdrom'> line 8, <graphics type='spice'> "
                              "line 9)")
