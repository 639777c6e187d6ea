"""``groups``' verdict agrees with what the manager's detach --group would do."""

from __future__ import annotations

import pytest

from vfioctl.errors import DeviceInUse
from vfioctl.hosts import open_host
from vfioctl.manager import groups as manager_groups
from vfioctl.manager.plan import ActionKind
from vfioctl.model.assign import assess
from vfioctl.model.groups import list_groups


@pytest.mark.parametrize("name", ["workstation", "sriov-server", "q35-vmtest"])
def test_verdict_matches_a_planned_group_detach(name: str) -> None:
    host = open_host(f"sim:{name}")
    for group in list_groups(host):
        verdict = assess(host, group)
        if not verdict.together:
            continue
        try:
            plan = manager_groups.plan_detach(host, {}, [verdict.together[0]], group=True)
            plan.check()
        except DeviceInUse:
            assert not verdict.assignable, group.number
            continue
        assert verdict.assignable, group.number
        going = {a.addr for a in plan.actions
                 if a.kind in (ActionKind.DETACHED, ActionKind.ALREADY)}
        stay = {a.addr for a in plan.actions if a.kind is ActionKind.LEFT_ALONE}
        assert going == set(verdict.together), group.number
        assert stay == set(verdict.left_alone), group.number


def test_workstation_answers() -> None:
    host = open_host("sim:workstation")
    by_number = {g.number: assess(host, g) for g in list_groups(host)}
    assert by_number[8].verdict == "alone" and by_number[8].assignable  # the NVMe
    assert by_number[1].verdict == "with 1 other"
    assert [str(a) for a in by_number[1].left_alone] == ["0000:00:01.0"]
    blocked = by_number[5]
    assert blocked.verdict == "blocked"
    assert {str(u.address) for u in blocked.host_uses} == {"0000:04:00.0", "0000:05:00.0"}
    assert "root filesystem" in blocked.sentence()
    assert by_number[6].verdict == "nothing to assign"
