"""Every Python package directory in the repository is listed in pyproject.toml, so installs carry it."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("search_common", "retriever_service", "reranker_service", "gateway", "training")


def test_every_package_is_listed() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for top in TOP_LEVEL
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
