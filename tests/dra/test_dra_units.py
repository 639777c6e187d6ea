"""The driver's pure parts: names, claim parsing, socket paths, CDI documents."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfioctl import ConfigError, NotFound, PciAddress, UsageError
from vfioctl.dra import cdi
from vfioctl.dra.claims import ClaimRef, parse_claim, parse_config
from vfioctl.dra.config import DriverConfig, SocketPathTooLong, check_socket_path
from vfioctl.dra.inventory import address_of, device_name

SCHEMA = json.loads((Path(__file__).parent / "data/cdi-schema.json").read_text())
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 31),
       st.integers(0, 7))
def test_device_names_are_dns_labels_that_name_one_address(
        domain: int, bus: int, slot: int, fn: int) -> None:
    import re

    addr = PciAddress(domain, bus, slot, fn)
    name = device_name(addr)
    assert re.fullmatch(DNS_LABEL, name)
    assert address_of(name) == addr


@pytest.mark.parametrize("name", ["gpu", "pci-0000-01-00", "pci-0000-01-00-9",
                                  "pci-zzzz-01-00-0", "pcie-0000-01-00-0"])
def test_names_not_ours_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="not one of this driver's devices"):
        address_of(name)


def _claim(**status: object) -> dict[str, object]:
    return {"metadata": {"uid": "u1", "name": "c", "namespace": "ns"}, "status": status}


REF = ClaimRef("ns", "c", "u1")


def test_parse_claim_takes_our_results_and_our_opt_in_only() -> None:
    doc = _claim(allocation={"devices": {
        "results": [
            {"request": "r1", "driver": "vfio.vfioctl.io", "pool": "n", "device": "pci-a"},
            {"request": "r2", "driver": "gpu.other.io", "pool": "n", "device": "gpu0"}],
        "config": [
            {"requests": ["r2"], "opaque": {"driver": "vfio.vfioctl.io", "parameters": {
                "apiVersion": "vfio.vfioctl.io/v1alpha1", "kind": "VfioConfig",
                "takeGroup": True}}},
            {"opaque": {"driver": "gpu.other.io", "parameters": {"anything": 1}}}]}})
    alloc = parse_claim(doc, REF, "vfio.vfioctl.io")
    assert [(d.request, d.device) for d in alloc.devices] == [("r1", "pci-a")]
    assert alloc.take_group is False       # the opt-in was for another request
    doc["status"]["allocation"]["devices"]["config"][0]["requests"] = []  # type: ignore[index]
    assert parse_claim(doc, REF, "vfio.vfioctl.io").take_group is True


def test_parse_claim_refuses_another_uid_and_an_unallocated_claim() -> None:
    with pytest.raises(NotFound, match="has UID"):
        parse_claim(_claim(), ClaimRef("ns", "c", "u2"), "vfio.vfioctl.io")
    with pytest.raises(NotFound, match="not allocated"):
        parse_claim(_claim(), REF, "vfio.vfioctl.io")


@pytest.mark.parametrize(("params", "match"), [
    ([], "not a JSON object"),
    ({"apiVersion": "vfio.vfioctl.io/v1", "kind": "VfioConfig"}, "not this driver's"),
    ({"apiVersion": "vfio.vfioctl.io/v1alpha1", "kind": "VfioConfig", "takegroup": True},
     "unknown parameter 'takegroup'"),
    ({"apiVersion": "vfio.vfioctl.io/v1alpha1", "kind": "VfioConfig", "takeGroup": "yes"},
     "true or false"),
])
def test_bad_parameters_are_refused(params: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(params, "config[0]")


def test_socket_paths_must_fit_sun_path() -> None:
    assert check_socket_path(Path("/" + "a" * 106)) == Path("/" + "a" * 106)
    with pytest.raises(SocketPathTooLong, match="108 bytes"):
        check_socket_path(Path("/" + "a" * 107))
    config = DriverConfig(node_name="n", plugins_dir=Path("/" + "p" * 90))
    with pytest.raises(SocketPathTooLong):
        _ = config.dra_socket
    assert DriverConfig(node_name="n").registration_socket == Path(
        "/var/lib/kubelet/plugins_registry/vfio.vfioctl.io-reg.sock")


@pytest.mark.parametrize("name", ["vfio", "Vfio.example.com", "-a.b", "a" * 60 + ".com"])
def test_driver_names_are_dns_subdomains(name: str) -> None:
    with pytest.raises(UsageError):
        DriverConfig(node_name="n", driver_name=name)


def test_cdi_spec_validates_and_keeps_the_token_path_only(tmp_path: Path) -> None:
    token = tmp_path / "vf-token-pci-0000-03-02-0"
    spec = cdi.build_spec("vfio.vfioctl.io", "u1", [
        cdi.CdiDevice("pci-0000-03-02-0", "/dev/vfio/20", token),
        cdi.CdiDevice("pci-0000-01-00-0", "/dev/vfio/1")],
        [(tmp_path / "m.json", "/var/run/kubernetes.io/dra-device-attributes/x")])
    jsonschema.validate(spec, SCHEMA)
    vf, gpu = spec["devices"]
    assert vf["containerEdits"]["env"] == [
        "VFIOCTL_VF_TOKEN_FILE=/var/run/vfioctl/vf-token/pci-0000-03-02-0"]
    assert "env" not in gpu["containerEdits"] and "mounts" not in gpu["containerEdits"]
    # a misspelt edit fails the schema: the schema is no rubber stamp
    vf["containerEdits"]["devicenodes"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, SCHEMA)


def test_atomic_write_never_widens_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    path.chmod(0o644)
    cdi.write_atomic(path, b"new", 0o400)
    assert path.read_bytes() == b"new" and (path.stat().st_mode & 0o777) == 0o400
    cdi.write_atomic(path, b"again", 0o400)        # a retry over the read-only file
    assert path.read_bytes() == b"again"
