"""doctor's KVM, memlock, hugepages, iommufd, unsafe-interrupt and reset checks, each on
simulated hosts that fail it and pass it (the host file says what the kernel shows)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vfioctl import doctor
from vfioctl.cli.main import cli
from vfioctl.errors import ConfigError
from vfioctl.sim.host import SimHost

BASE = """
[host]
iommu = "intel"
kernel = "{kernel}"
{host}

[[driver]]
name = "e1000e"
ids = ["8086:10d3"]
[[driver]]
name = "snd_hda_intel"
ids = ["10de:10f0"]
[[driver]]
name = "nouveau"
ids = ["10de:1b80"]
[[driver]]
name = "vfio-pci"
loaded = false
sriov = true
[[driver]]
name = "pcieport"
classes = ["060400"]
module = ""

[[device]]
addr = "0000:00:00.0"
kind = "host-bridge"
id = "8086:1237"
[[device]]
addr = "0000:00:01.0"
kind = "root-port"
id = "8086:1901"
[[device]]
addr = "0000:01:00.0"
parent = "0000:00:01.0"
id = "10de:1b80"
class = "030000"
{gpu}
[[device]]
addr = "0000:01:00.1"
parent = "0000:00:01.0"
id = "10de:10f0"
class = "040300"
[[device]]
addr = "0000:00:19.0"
id = "8086:10d3"
class = "020000"
{nic}
{tail}
"""


def host(*, host: str = "", gpu: str = "", nic: str = "flr = true", tail: str = "",
         kernel: str = "6.1.0-18-amd64") -> SimHost:
    return SimHost.from_text(BASE.format(host=host, gpu=gpu, nic=nic, tail=tail,
                                         kernel=kernel))


def by_name(h: SimHost) -> dict[str, doctor.Check]:
    return {c.name: c for c in doctor.run_checks(h)}


# -- KVM ------------------------------------------------------------------------------


def test_kvm_usable_opens_and_closes() -> None:
    h = host()
    check = doctor.check_kvm(h)
    assert (check.status, check.detail) == ("pass", "/dev/kvm opens")
    assert not h._kvm_fds  # closed again


def test_kvm_absent_fails_naming_the_module() -> None:
    check = doctor.check_kvm(host(host='kvm = "absent"'))
    assert check.status == "fail" and "missing" in check.detail
    assert check.fix is not None and "modprobe" in check.fix


def test_kvm_denied_fails_with_the_group_fix() -> None:
    check = doctor.check_kvm(host(host='kvm = "denied"'))
    assert check.status == "fail" and "may not open" in check.detail
    assert check.fix is not None and "kvm group" in check.fix


def test_kvm_on_a_read_only_host_is_not_opened() -> None:
    check = doctor.check_kvm(SimHost.bundled("workstation"))
    assert check.status == "pass" and "read-only" in check.detail


# -- memlock --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "status", "shown"), [
    ("8388608", "warn", "8 MiB"),
    ("65536", "warn", "64 KiB"),
    ("1073741824", "pass", "1 GiB"),
    ('"unlimited"', "pass", "unlimited"),
])
def test_memlock_against_one_gib(value: str, status: str, shown: str) -> None:
    check = doctor.check_memlock(host(host=f"memlock = {value}"))
    assert check.status == status and check.detail.startswith(shown)
    if status == "warn":
        assert check.fix is not None
        assert "ulimit -l" in check.fix and "LimitMEMLOCK" in check.fix
        assert "libvirt" in check.fix


def test_memlock_default_is_the_kernel_default() -> None:
    assert doctor.check_memlock(host()).detail.startswith("8 MiB")


def test_memlock_parser_reads_the_soft_limit() -> None:
    text = ("Limit                     Soft Limit           Hard Limit           Units\n"
            "Max locked memory         65536                unlimited            bytes\n")
    assert doctor._memlock(text) == 65536
    assert doctor._memlock(text.replace("65536 ", "unlimited")) is None
    assert doctor._memlock("garbage") == -1


def test_memlock_with_cap_ipc_lock_passes() -> None:
    assert doctor._has_cap("CapEff:\t000001ffffffffff\n", doctor.CAP_IPC_LOCK)
    assert not doctor._has_cap("CapEff:\t0000000000000000\n", doctor.CAP_IPC_LOCK)
    assert not doctor._has_cap("CapEff:\tzz\n", doctor.CAP_IPC_LOCK)


# -- hugepages ------------------------------------------------------------------------


def test_hugepages_none_reserved_is_info() -> None:
    check = doctor.check_hugepages(host())
    assert check.status == "info" and "none reserved" in check.detail


def test_hugepages_free_pass() -> None:
    check = doctor.check_hugepages(host(
        host="hugepages = [{size_kib = 2048, total = 1024, free = 512}]"))
    assert check.status == "pass"
    assert check.detail == "2 MiB pages: 512 of 1024 free"


def test_hugepages_all_used_warns() -> None:
    check = doctor.check_hugepages(host(
        host="hugepages = [{size_kib = 1048576, total = 4, free = 0}]"))
    assert check.status == "warn" and "0 of 4 free" in check.detail
    assert check.fix is not None and "hugepages-1048576kB/nr_hugepages" in check.fix


def test_hugepages_from_meminfo_when_sysfs_is_missing() -> None:
    class NoSysfs(SimHost):
        def listdir(self, path: object) -> list[str]:
            if str(path) == str(doctor.SYS_HUGEPAGES):
                raise FileNotFoundError(str(path))
            return super().listdir(path)  # type: ignore[arg-type]

    h = host(host="hugepages = [{size_kib = 2048, total = 8, free = 0}]")
    h.__class__ = NoSysfs
    check = doctor.check_hugepages(h)
    assert check.status == "warn" and "0 of 8 free" in check.detail


def test_hugepages_more_than_memory_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="more than memory_mib"):
        host(host="memory_mib = 1024\nhugepages = [{size_kib = 1048576, total = 2}]")


# -- iommufd --------------------------------------------------------------------------


def test_iommufd_old_kernel_is_info() -> None:
    check = doctor.check_iommufd(host())
    assert check.status == "info" and "predates" in check.detail


def test_iommufd_new_kernel_without_config_is_info_not_fail() -> None:
    check = doctor.check_iommufd(host(kernel="6.12.9-amd64"))
    assert check.status == "info" and "CONFIG_IOMMUFD" in check.detail


def test_iommufd_present_passes_and_counts_cdevs() -> None:
    h = host(host="iommufd = true", kernel="6.8.0-45-generic")
    assert doctor.check_iommufd(h).status == "pass"
    h.load_module("vfio_pci")
    h.write("sys/bus/pci/devices/0000:00:19.0/driver_override", "vfio-pci")
    h.write("sys/bus/pci/devices/0000:00:19.0/driver/unbind", "0000:00:19.0")
    h.write("sys/bus/pci/drivers_probe", "0000:00:19.0")
    check = doctor.check_iommufd(h)
    assert check.status == "pass" and "1 device cdev" in check.detail


# -- interrupt remapping --------------------------------------------------------------


def _vfio_loaded(h: SimHost) -> SimHost:
    h.load_module("vfio_pci")
    return h


def test_no_interrupt_remapping_fails_with_both_fixes() -> None:
    check = doctor.check_interrupt_remapping(
        _vfio_loaded(host(host="interrupt_remapping = false")))
    assert check.status == "fail"
    assert check.fix is not None and "allow_unsafe_interrupts=1" in check.fix


def test_unsafe_interrupts_allowed_without_remapping_warns() -> None:
    check = doctor.check_interrupt_remapping(_vfio_loaded(host(
        host="interrupt_remapping = false\nallow_unsafe_interrupts = true")))
    assert check.status == "warn" and "inject" in check.detail


def test_unsafe_interrupts_set_but_not_needed() -> None:
    check = doctor.check_interrupt_remapping(_vfio_loaded(host(
        host="allow_unsafe_interrupts = true")))
    assert check.status == "pass" and "not needed" in check.detail
    assert doctor.check_interrupt_remapping(_vfio_loaded(host())).detail == \
        "supported by every DMAR unit"


# -- resets ---------------------------------------------------------------------------


def test_bus_reset_only_names_what_else_is_on_the_bus() -> None:
    checks = by_name(host())
    gpu = checks["reset 0000:01:00.0"]
    assert gpu.status == "warn" and "bus reset only" in gpu.detail
    assert "0000:01:00.1" in gpu.detail
    audio = checks["reset 0000:01:00.1"]
    assert "no reset of its own" in audio.detail and "0000:01:00.0" in audio.detail
    assert "0000:00:19.0" not in " ".join(c.detail for c in checks.values()
                                          if c.name.startswith("reset"))


def test_flr_passes() -> None:
    checks = by_name(host(gpu="flr = true", tail=""))
    assert "reset 0000:01:00.0" not in checks
    assert checks["device reset"].status == "warn"   # the audio function still lacks one


def test_root_bus_device_without_reset() -> None:
    checks = by_name(host(nic=""))
    root = checks["reset, root bus"]
    assert root.status == "warn" and "0000:00:19.0" in root.detail
    assert "root bus has no bus reset" in root.detail


def test_cleared_reset_method_is_reported() -> None:
    h = host(gpu="flr = true")
    h.write("sys/bus/pci/devices/0000:01:00.0/reset_method", "")
    assert "reset 0000:01:00.0" in by_name(h)


def test_all_resettable_passes() -> None:
    text = BASE.format(host="", gpu="flr = true", nic="flr = true", tail="",
                       kernel="6.1.0").replace(
        'addr = "0000:01:00.1"\nparent = "0000:00:01.0"\nid = "10de:10f0"\n'
        'class = "040300"', 'addr = "0000:01:00.1"\nparent = "0000:00:01.0"\n'
        'id = "10de:10f0"\nclass = "040300"\nflr = true')
    checks = by_name(SimHost.from_text(text))
    assert checks["device reset"].status == "pass"
    assert not [n for n in checks if n.startswith("reset")]


# -- CLI ------------------------------------------------------------------------------


def test_doctor_json_carries_the_new_checks(tmp_path: object) -> None:
    result = CliRunner().invoke(cli, ["--host", "sim:workstation", "doctor", "--json"])
    assert result.exit_code == 0, result.output
    names = {c["name"]: c for c in json.loads(result.output)}
    for name in ("KVM", "memlock limit", "hugepages", "iommufd / vfio cdev",
                 "device reset"):
        assert name in names
        assert names[name]["status"] in ("pass", "warn", "fail", "info")
    assert names["memlock limit"]["fix"]


def test_doctor_fails_with_exit_1_when_kvm_is_missing(tmp_path: object) -> None:
    from pathlib import Path
    path = Path(str(tmp_path)) / "nokvm.toml"
    path.write_text(BASE.format(host='kvm = "absent"', gpu="", nic="", tail="",
                                kernel="6.1.0"))
    result = CliRunner().invoke(cli, ["--host", f"sim:{path}", "doctor"])
    assert result.exit_code == 1
    assert "KVM" in result.output and "FAIL" in result.output
