"""CLI ``tree``: the PCI topology with IOMMU groups and ACS breaks, as text, JSON or SVG.

The text is ``lspci -tv``'s picture plus each function's group: on a terminal every
group has its colour, so the functions that share one stand out wherever they sit in
the tree. A bridge whose ACS does not isolate its subtree is marked ``ACS break`` and
explained under the tree. ``--svg FILE`` draws the same picture for a forum post or a
bug report, built with the standard library's ElementTree (imported only then).
"""

from __future__ import annotations

from pathlib import Path

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import paint, shorten, terminal_width, use_color
from vfioctl.model.tree import RootBus, TreeNode

#: Terminal colours cycled over group numbers (``red`` is kept for ACS breaks).
GROUP_STYLES = ("green", "blue", "magenta", "cyan", "yellow", "bold green", "bold blue",
                "bold magenta", "bold cyan", "bold yellow")
#: SVG fills cycled over group numbers (light, so black text stays readable).
GROUP_FILLS = ("#cde8c5", "#c5d8f0", "#e8c5e5", "#c5ece9", "#f3e6b5", "#f2cfc0",
               "#d6d0f0", "#e0e8b8", "#c8e0e8", "#ecd5b5", "#d8d8d8", "#f0c8d8")
BREAK_MARK = "ACS break"


def _group_text(node: TreeNode) -> str:
    group = node.info.iommu_group
    return "group -" if group is None else f"group {group}"


def _names() -> object:
    from vfioctl.pci.ids import load_pci_ids

    return load_pci_ids()


def _name(ids: object, node: TreeNode) -> str:
    d = node.info
    describe = getattr(ids, "describe", None)
    if describe is None:
        return f"{d.vendor:04x}:{d.device:04x}"
    return str(describe(d.vendor, d.device))


def text_lines(roots: list[RootBus], ids: object, *, width: int | None,
               color: bool) -> list[str]:
    """The tree as lines; with ``width`` the names are cut (``…``) to fit it."""
    lines: list[str] = []

    def emit(node: TreeNode, lead: str, last: bool) -> None:
        d = node.info
        branch = lead + ("└─ " if last else "├─ ")
        group_style = (None if d.iommu_group is None
                       else GROUP_STYLES[d.iommu_group % len(GROUP_STYLES)])
        fixed = [(branch, None), (str(d.address), group_style), ("  ", None),
                 (_group_text(node), group_style), ("  ", None),
                 (d.driver or "-", None)]
        if node.acs_break:
            fixed += [("  ", None), (BREAK_MARK, "bold red")]
        used = sum(len(t) for t, _ in fixed) + 2
        name = _name(ids, node)
        if width is not None:
            name = shorten(name, max(width - used, 8))
        lines.append("".join(paint(t, s, color) for t, s in fixed) + "  " + name)
        below = lead + ("   " if last else "│  ")
        for n, child in enumerate(node.children):
            emit(child, below, n == len(node.children) - 1)

    for root in roots:
        lines.append(root.name)
        for n, child in enumerate(root.children):
            emit(child, "", n == len(root.children) - 1)
    breaks = [n for r in roots for n in r.walk() if n.acs_break]
    if breaks:
        lines.append("")
        lines.append("ACS breaks (the devices below share their isolation):")
        for node in breaks:
            lines.append(f"  {node.address}: {node.acs_break}")
    return lines


def _colour_of(node: TreeNode) -> str:
    group = node.info.iommu_group
    return "#ffffff" if group is None else GROUP_FILLS[group % len(GROUP_FILLS)]


def svg_text(roots: list[RootBus], ids: object, title: str) -> str:
    """An SVG picture of the tree: a box per function filled with its group's colour,
    elbow lines from each bridge to what is behind it, ACS breaks outlined in red."""
    import xml.etree.ElementTree as ET

    row_h, indent, char_w, left, top = 24, 28, 7.2, 12, 40
    rows: list[tuple[int, TreeNode | RootBus]] = []

    def collect(node: TreeNode, depth: int) -> None:
        rows.append((depth, node))
        for child in node.children:
            collect(child, depth + 1)

    for root in roots:
        rows.append((0, root))
        for child in root.children:
            collect(child, 1)

    labels: list[str] = []
    for _depth, item in rows:
        if isinstance(item, RootBus):
            labels.append(item.name)
            continue
        d = item.info
        label = (f"{d.address}  {_group_text(item)}  {d.driver or '-'}  "
                 f"{_name(ids, item)}")
        if item.acs_break:
            label += f"  [{BREAK_MARK}: {item.acs_break}]"
        labels.append(label)
    width = int(max((left + depth * indent + len(label) * char_w + 24
                     for (depth, _), label in zip(rows, labels, strict=True)),
                    default=200))
    height = top + len(rows) * row_h + 16
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", version="1.1",
                     width=str(width), height=str(height),
                     viewBox=f"0 0 {width} {height}")
    svg.set("font-family", "monospace")
    svg.set("font-size", "12")
    ET.SubElement(svg, "title").text = title
    ET.SubElement(svg, "rect", x="0", y="0", width=str(width), height=str(height),
                  fill="#ffffff")
    heading = ET.SubElement(svg, "text", x=str(left), y="22")
    heading.set("font-size", "14")
    heading.set("font-weight", "bold")
    heading.text = title
    stack: list[tuple[int, float]] = []  # (depth, y) of the rows above, for the lines
    for n, ((depth, item), label) in enumerate(zip(rows, labels, strict=True)):
        y = top + n * row_h
        x = left + depth * indent
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            px = left + stack[-1][0] * indent + 8
            ET.SubElement(svg, "path", d=f"M{px},{stack[-1][1] + row_h - 4} "
                          f"V{y + row_h / 2 - 2} H{x}", fill="none", stroke="#888888")
        stack.append((depth, y))
        box = ET.SubElement(svg, "rect", x=str(x), y=str(y), rx="3",
                            width=f"{len(label) * char_w + 12:.0f}",
                            height=str(row_h - 4))
        if isinstance(item, RootBus):
            box.set("fill", "#eeeeee")
            box.set("stroke", "#444444")
        else:
            box.set("fill", _colour_of(item))
            box.set("stroke", "#cc0000" if item.acs_break else "#666666")
            if item.acs_break:
                box.set("stroke-width", "2")
                box.set("stroke-dasharray", "4 2")
            box.set("data-address", str(item.address))
        text = ET.SubElement(svg, "text", x=str(x + 6), y=str(y + row_h / 2 + 2))
        text.text = label
    ET.indent(svg)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(svg, encoding="unicode") + "\n")


@click.command("tree")
@click.option("--json", "as_json", is_flag=True,
              help="Print the documented JSON document instead of the tree.")
@click.option("--svg", "svg_file", metavar="FILE", type=click.Path(dir_okay=False,
              path_type=Path), help="Also write the tree as an SVG picture to FILE.")
@click.pass_obj
def tree_cmd(ctx: Context, as_json: bool, svg_file: Path | None) -> None:
    """The PCI topology as a tree, with each function's IOMMU group and ACS breaks.

    Like `lspci -tv`, plus groups: on a terminal each group has its own colour. A bridge
    marked "ACS break" does not isolate the devices below it (see `vfioctl explain`).
    """
    from vfioctl.model.tree import build_tree

    roots = build_tree(ctx.host)
    if svg_file is not None:
        from vfioctl.errors import PermissionDenied, UsageError

        text = svg_text(roots, _names(), f"PCI topology and IOMMU groups "
                        f"({ctx.host_spec or 'linux'})")
        try:
            svg_file.write_text(text, encoding="utf-8")
        except PermissionError as err:
            raise PermissionDenied(f"cannot write '{svg_file}': {err.strerror}",
                                   hint="choose a file you may write") from err
        except OSError as err:
            raise UsageError(f"cannot write '{svg_file}': {err.strerror}",
                             hint="choose a file in a directory that exists") from err
        if not as_json:
            count = sum(len(r.walk()) for r in roots)
            click.echo(f"wrote the tree of {count} functions to '{svg_file}'")
            return
    if as_json:
        from vfioctl.model.jsontext import dumps

        click.echo(dumps([r.to_json() for r in roots]))
        return
    for line in text_lines(roots, _names(), width=terminal_width(), color=use_color()):
        click.echo(line)
