"""`search-demo` run as a user runs it: its own process, output captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_demo(*argv: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "operations.demo", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
