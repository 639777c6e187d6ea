"""Shared fixtures: golden-file comparison and paths to test data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REGENERATE = os.environ.get("VFIOCTL_TEST_REGENERATE") == "1"


class Golden:
    """Compare text with a golden file; VFIOCTL_TEST_REGENERATE=1 rewrites it.

    Review regenerated files line by line with `git diff` before committing them.
    """

    def check(self, path: Path, actual: str) -> None:
        if REGENERATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual)
            return
        if not path.exists():
            pytest.fail(
                f"golden file {path} is missing; create it with "
                f"VFIOCTL_TEST_REGENERATE=1 and review it"
            )
        assert actual == path.read_text(), f"output differs from {path}"


@pytest.fixture
def golden() -> Golden:
    return Golden()


@pytest.fixture
def data_dir() -> Path:
    return DATA
