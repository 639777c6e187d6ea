"""``vfioctl tree``: the topology, groups, ACS breaks, and the SVG picture."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from vfioctl.cli.main import main
from vfioctl.explain import explain_device
from vfioctl.hosts import open_host
from vfioctl.model.device import list_devices
from vfioctl.model.tree import build_tree


@pytest.mark.parametrize("name", ["workstation", "sriov-server"])
def test_every_function_once_under_its_bridge(name: str) -> None:
    host = open_host(f"sim:{name}")
    roots = build_tree(host)
    nodes = [n for r in roots for n in r.walk()]
    assert sorted(n.address for n in nodes) == [d.address for d in list_devices(host)]
    for node in nodes:
        for child in node.children:
            ex = explain_device(host, child.address)
            assert ex.path and ex.path[-1].startswith(str(node.address))


def test_acs_breaks_are_the_bridges_explain_blames() -> None:
    host = open_host("sim:workstation")
    breaks = {str(n.address) for r in build_tree(host) for n in r.walk() if n.acs_break}
    assert breaks == {"0000:00:01.0", "0000:00:1c.0", "0000:00:1c.2", "0000:00:1c.4"}
    assert "root port 0000:00:1c.2" in " ".join(
        explain_device(host, "0000:04:00.0").reasons)


def test_svg_parses_and_names_every_function(tmp_path: Path) -> None:
    out_file = tmp_path / "tree.svg"
    with redirect_stdout(io.StringIO()):
        assert main(["--host", "sim:sriov-server", "tree", "--svg", str(out_file)]) == 0
    root = ET.fromstring(out_file.read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for d in list_devices(open_host("sim:sriov-server")):
        assert str(d.address) in text


def test_svg_to_a_missing_directory_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = str(tmp_path / "no" / "x.svg")
    code = main(["--host", "sim:workstation", "tree", "--svg", target])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1


def test_json_holds_every_function() -> None:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["--host", "sim:workstation", "tree", "--json"]) == 0
    doc = json.loads(buf.getvalue())

    def count(nodes: list[dict[str, object]]) -> int:
        return sum(1 + count(n["children"]) for n in nodes)  # type: ignore[arg-type,misc]
    assert sum(count(r["children"]) for r in doc) == 19
