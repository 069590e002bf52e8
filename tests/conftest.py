"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared test collections; tests that need them skip with a message where they are absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"shared test collections not found at {DATA_ROOT}")
    return DATA_ROOT


@pytest.fixture(scope="session")
def scifact_root(data_root: Path) -> Path:
    root = data_root / "scifact"
    if not (root / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {root}")
    return root
