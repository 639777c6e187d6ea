"""The product's CLI, called in-process the way a user's shell would call it.

In-process because every Python start costs about a second under TCG; the console
script itself is exercised once (test_10_inventory). The JSON documents are the
documented, stable interface, so scenarios compare those, not text output.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CliResult:
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.rc == 0, f"vfioctl exited {self.rc}: {self.stderr.strip()}"
        return json.loads(self.stdout)


class VfioctlCli:
    """``vfioctl --host SPEC ARGS…`` for one host spec."""

    def __init__(self, host_spec: str) -> None:
        self.host_spec = host_spec

    def __call__(self, *args: str) -> CliResult:
        from vfioctl.cli.main import main

        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(["--host", self.host_spec, *args])
        return CliResult(rc or 0, stdout.getvalue(), stderr.getvalue())

    def json(self, *args: str) -> Any:
        return self(*args, "--json").json()
