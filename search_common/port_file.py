"""The port file a service writes once it is SERVING (`--port-file`): how a launcher learns a `--port 0`."""

from __future__ import annotations

import os
from pathlib import Path


def write_port_file(path: Path, port: int) -> None:
    """Writes a port number atomically (temporary file + rename), so readers never see a partial write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(f"{port}\n")
    scratch.replace(path)


def read_port_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None
