"""docs/api.md's examples run as written (doctest), each file in a scratch directory on
simulated hosts: the GPU workflow and the VF-token workflow through the facade alone."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "api.md"


def test_api_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    monkeypatch.delenv("VFIOCTL_STATE_DIR", raising=False)
    failures, tried = doctest.testfile(
        str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False,
        raise_on_error=False, report=True)
    assert tried > 30, "the examples were not found"
    assert failures == 0, f"{failures} of {tried} examples in docs/api.md failed"
