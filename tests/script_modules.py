"""Loading the repository's stand-alone scripts (bench/, deploy/) as modules, to test their pure parts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_script(relative_path: str, module_name: str) -> ModuleType:
    """The script at `relative_path` (from the repository root), executed as module `module_name`."""
    spec = importlib.util.spec_from_file_location(module_name, REPO / relative_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
