"""Every row of docs/kernel.md "VF token table" through vfioctl's own VFIO API, on the
simulator — the same scenario function the real-kernel tier runs
(tests/realkernel/test_50_vf_token.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from tokenops import change_numvfs
from tokentest import Q35_PF, Q35_PLAIN, Q35_VF, SRV_PF, userspace_pf

from vfioctl.manager import HostdevManager
from vfioctl.secret import VfToken
from vfioctl.sim.host import SimHost
from vfioctl.vfio.device import TokenNotAccepted, open_device


def _scenario() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "realkernel" / "test_50_vf_token.py"
    spec = importlib.util.spec_from_file_location("vf_token_scenario", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


S = _scenario()


def test_every_token_row_on_the_simulator(q35: SimHost) -> None:
    rows = S.token_rows(q35, Q35_PF, Q35_VF, Q35_PLAIN)
    S.assert_rows(rows)
    assert len(rows) >= 35


def test_rows_name_the_product_errors(q35: SimHost) -> None:
    rows = {r.name: r for r in S.token_rows(q35, Q35_PF, Q35_VF, Q35_PLAIN)}
    assert rows["VF open, wrong token"].error == "VfTokenRejected"
    assert rows["PF open while a VF is open, no token"].error == "VfTokenRejected"
    assert rows["non-SR-IOV open with a vf_token"].error == "TokenNotAccepted"
    assert rows["VF FEATURE SET (not a PF)"].error == "TokenNotAccepted"
    assert rows["second open of the PF's group: EBUSY"].error == "GroupBusy"


def test_vf_of_a_kernel_driven_pf(make_host: object) -> None:
    """Source rows: a VF of a PF on its kernel driver opens without a token, and a token
    is refused (EINVAL) with the PF's driver named."""
    assert callable(make_host)
    host: SimHost = make_host("sriov-server")
    change_numvfs(host, SRV_PF, 2)                    # i40e creates them
    vf = "0000:03:02.0"
    HostdevManager(host).detach([vf])
    with open_device(host, vf) as handle:
        assert handle.info.num_regions == 9
    with pytest.raises(TokenNotAccepted, match=r"takes no VF token: its PF 0000:03:00.0 "
                       r"is driven by i40e") as exc, \
            open_device(host, vf, token=VfToken.generate()):
        pass
    assert isinstance(exc.value.__cause__, OSError)


def test_scenario_module_is_the_real_kernel_one() -> None:
    assert S.PF == Q35_PF and S.VF == Q35_VF
    assert userspace_pf is not None
