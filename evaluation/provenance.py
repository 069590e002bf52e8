"""Where a result came from: the commit a benchmark or report ran at, recorded beside its figures."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_sha(*, short: bool = False, cwd: Path | None = None) -> str:
    """The commit checked out at `cwd` (default: the working directory); 'unknown' outside a git checkout."""
    command = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()
