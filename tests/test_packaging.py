"""The package says what it is: Apache-2.0 with the license text, and no dead URLs."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_is_apache_2_with_its_text() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_bytes()
    # The Apache Software Foundation's LICENSE-2.0.txt, unchanged (its well-known digest).
    assert hashlib.md5(text).hexdigest() == "3b83ef96387f14655fc854ddc3c6bd57"
    # PEP 639: the expression is the license; a License classifier beside it is an error.
    assert not [c for c in PROJECT.get("classifiers", []) if c.startswith("License ::")]


def test_no_placeholder_urls() -> None:
    for name, url in PROJECT.get("urls", {}).items():
        assert url.startswith("https://") and not any(
            word in url for word in ("example", "TODO", "your-", "USER", "OWNER")), name
