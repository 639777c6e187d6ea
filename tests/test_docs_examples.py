"""The console examples of README.md and docs/*.md run, and their output is compared.

Each ```console block is a session: ``$ `` lines are commands, the lines up to the
next ``$`` are what the command prints (stdout and stderr as they interleave). The rules
the docs follow (restated in docs/examples/README.md, which readers see):

- Every block runs in a fresh scratch directory holding a copy of ``docs/examples/``,
  with no ``VFIOCTL_HOST``: a block sets up the simulated host it needs
  (``vfioctl sim copy …``, ``export VFIOCTL_HOST=…``, ``--host sim:…``).
- In expected output, ``…`` stands for any text: alone on a line (optionally followed
  by a comment) it stands for any number of lines, inside a line for any part of it.
- Timestamps (ISO 8601) are compared as "some timestamp".
- ``<!-- example: skip (WHY) -->`` on the line before a block: shown, not run (root,
  real hardware, a real QEMU). ``<!-- example: needs PATH -->``: run only where PATH
  exists. A command ending in ``# not run: WHY``: not run, its output not compared.
  A command that would need root (``sudo``) or start a real QEMU (``start`` without
  ``--dry-run``) in an unmarked block fails the test: the marker must say so.

``docs/api.md`` is not here: it is a doctest (tests/test_docs_api.py).
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vfioctl.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md")
                                    if p.name != "api.md")]

_MARKER = re.compile(r"<!--\s*example:\s*(skip|needs|continued)\b\s*(.*?)\s*-->")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?")
_NOT_RUN = re.compile(r"#\s*not run:")


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    doc: Path
    line: int
    marker: tuple[str, str] | None
    steps: list[Step]

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def parse_blocks(doc: Path) -> Iterator[Block]:
    """Every ```console block of DOC with the marker on the line before it."""
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        before = lines[i - 1].strip() if i else ""
        found = _MARKER.search(before)
        marker = (found.group(1), found.group(2)) if found else None
        start, i = i + 1, i + 1
        steps: list[Step] = []
        while i < len(lines) and lines[i].strip() != "```":
            text = lines[i]
            if text.startswith("$ "):
                command = text[2:]
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1] + " " + lines[i].strip()
                steps.append(Step(command))
            elif steps:
                steps[-1].expected.append(text)
            else:
                raise AssertionError(f"{doc}:{i + 1}: output before the first '$ ' line")
            i += 1
        yield Block(doc, start, marker, steps)
        i += 1


def sessions(doc: Path) -> Iterator[Block]:
    """The blocks of DOC, each 'continued' block run after the one before it."""
    previous: Block | None = None
    for block in parse_blocks(doc):
        if block.marker is not None and block.marker[0] == "continued":
            assert previous is not None, f"{block.id}: 'continued' with no block before"
            previous.steps.extend(block.steps)
            continue
        if previous is not None:
            yield previous
        previous = block
    if previous is not None:
        yield previous


BLOCKS = [b for doc in DOCS for b in sessions(doc)]


def _normalise(text: str) -> str:
    return _TIMESTAMP.sub("<timestamp>", text.rstrip())


def _pattern(line: str) -> re.Pattern[str]:
    parts = _normalise(line).split("…")
    return re.compile(".*".join(re.escape(p) for p in parts) + r"\Z")


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ACTUAL is EXPECTED with each elision filled in (lines compared after
    trailing blanks are dropped; a line starting with '…' is any number of lines)."""
    exp = [e for e in (x.rstrip() for x in expected)]
    act = [_normalise(a) for a in actual]
    while exp and not exp[-1]:
        exp.pop()
    while act and not act[-1]:
        act.pop()

    def walk(e: int, a: int) -> bool:
        if e == len(exp):
            return a == len(act)
        if exp[e].lstrip().startswith("…"):
            return any(walk(e + 1, k) for k in range(a, len(act) + 1))
        return a < len(act) and bool(_pattern(exp[e]).match(act[a])) and walk(e + 1, a + 1)

    return walk(0, 0)


def _run_vfioctl(args: list[str]) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        main(args)
    return buf.getvalue()


def _run_line(command: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run one ``$`` line: ``&&`` chains, ``export``, vfioctl in process, else the shell."""
    words = shlex.split(command, comments=True)
    output = ""
    pieces: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            pieces.append([])
        else:
            pieces[-1].append(word)
    for piece in pieces:
        if not piece:
            continue
        if piece[0] == "export":
            for assignment in piece[1:]:
                name, _, value = assignment.partition("=")
                monkeypatch.setenv(name, value)
        elif piece[0] == "vfioctl":
            if "start" in piece and "--dry-run" not in piece:
                raise AssertionError(f"'{command}' starts a real QEMU: mark it "
                                     "'# not run: …' or the block 'example: skip'")
            output += _run_vfioctl(piece[1:])
        elif piece[0] == "sudo":
            raise AssertionError(f"'{command}' needs root: mark it '# not run: …'")
        else:
            done = subprocess.run(shlex.join(piece) if "|" not in command else command,
                                  shell=True, cwd=cwd, capture_output=True, text=True,
                                  check=False)
            output += done.stdout + done.stderr
    return output


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_console_example(block: Block, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    if block.marker is not None:
        kind, what = block.marker
        if kind == "skip":
            pytest.skip(f"marked in the doc: {what or 'not run'}")
        if not Path(what).exists():
            pytest.skip(f"needs {what}")
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    for name in ("VFIOCTL_HOST", "VFIOCTL_STATE_DIR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / ".run"))
    (tmp_path / ".run").mkdir(mode=0o700)
    for step in block.steps:
        if _NOT_RUN.search(step.command):
            continue
        actual = _run_line(step.command, tmp_path, monkeypatch)
        actual = actual.replace(str(tmp_path), "/tmp/example")
        ok = matches(step.expected, actual.splitlines())
        assert ok, (f"{block.id}: '$ {step.command}' printed:\n{actual}"
                    "--- where the doc says:\n" + "\n".join(step.expected))


def test_blocks_found() -> None:
    """The walk-throughs are there to check (a renamed fence must not empty this test)."""
    readme = [b for b in BLOCKS if b.doc.name == "README.md" and b.marker is None]
    assert len(readme) >= 3 and all(b.steps for b in BLOCKS)


@pytest.mark.parametrize(("expected", "actual", "ok"), [
    (["a", "…", "d"], ["a", "b", "c", "d"], True),
    (["a", "…", "d"], ["a", "d"], True),
    (["a", "…"], ["a", "b"], True),
    (["a", "d"], ["a", "b", "d"], False),
    (["x: error: bad; …"], ["x: error: bad; do this"], True),
    (["x: error: bad; …"], ["x: error: good; do this"], False),
    (["at 2026-11-21T20:22:15+00:00"], ["at 2031-01-02T03:04:05+00:00"], True),
    (["a", ""], ["a"], True),
    ([], ["unexpected"], False),
    (["a.b"], ["axb"], False),
])
def test_matches(expected: list[str], actual: list[str], ok: bool) -> None:
    assert matches(expected, actual) is ok


def _example_xml() -> Iterator[tuple[str, str]]:
    for doc in [*DOCS, ROOT / "docs" / "api.md"]:
        text = doc.read_text()
        for found in re.finditer(r"^```xml\n(.*?)^```", text, re.S | re.M):
            line = text[:found.start()].count("\n") + 1
            yield f"{doc.relative_to(ROOT)}:{line}", found.group(1)
    for path in sorted(EXAMPLES.glob("*.xml")):
        yield str(path.relative_to(ROOT)), path.read_text()


XML = list(_example_xml())


@pytest.mark.parametrize(("where", "text"), XML, ids=[w for w, _ in XML])
def test_example_xml_validates(where: str, text: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    path = tmp_path / "example.xml"
    path.write_text(text)
    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        code = main(["validate", str(path)])
    assert code == 0, f"{where}: {buf.getvalue()}"
