"""Helpers of the persistence tests: the CLI in-process, a simulated host file."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from vfioctl.cli.main import main


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str


def cli(*args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(args))
    return Run(rc, out.getvalue(), err.getvalue())


@dataclass(frozen=True)
class SimFile:
    """A host file and how to run vfioctl against it."""

    path: Path

    @property
    def spec(self) -> str:
        return f"sim:{self.path}"

    @property
    def etc(self) -> Path:
        return Path(str(self.path) + ".etc")

    def __call__(self, *args: str) -> Run:
        return cli("--host", self.spec, *args)

    def ok(self, *args: str) -> Run:
        r = self(*args)
        assert r.rc == 0, (args, r.rc, r.err)
        return r

    def edit(self, old: str, new: str, *, after: str) -> None:
        """Replace the first ``old`` after the line ``after`` in the hardware part."""
        text = self.path.read_text()
        at = text.index(after)
        i = text.index(old, at)
        self.path.write_text(text[:i] + new + text[i + len(old):])


