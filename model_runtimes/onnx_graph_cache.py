"""Exported ONNX graphs kept on disk, so a service exports (and quantises) a model once per host, not at
every start: all-mpnet-base-v2 took 4-6 s to export and 8 s more to quantise on 2 cores.

A graph is keyed by everything it is made from (the weights' checksum, the scheme, the exporter's
versions), so a new model or library makes a new file instead of reusing a stale one. Callers still check
the graph against torch when they load it; the cache only saves the work of making it. A cache that cannot
be written (a read-only home in a container) costs the export at every start and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "NEURAL_SEARCH_ONNX_CACHE"


def graph_cache() -> Path:
    """Where exported graphs live: $NEURAL_SEARCH_ONNX_CACHE, else ~/.cache/neural-search/onnx."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "neural-search" / "onnx"


def graph_key(parts: Mapping[str, str]) -> str:
    """A file name for the graph made from `parts` (name, checksum, scheme, library versions ...)."""
    digest = hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()[:24]
    name = "".join(c if c.isalnum() or c in "-._" else "_" for c in parts.get("name", "model"))
    return f"{name}-{digest}"


def cached_graph(key: str, make: Callable[[], bytes], *, cache: Path | None = None) -> bytes:
    """The graph stored under `key`, else `make()`'s, kept for the next start (written whole or not at
    all)."""
    path = (cache or graph_cache()) / f"{key}.onnx"
    try:
        graph = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot read the cached graph %s (%s); exporting it again", path, exc)
    else:
        logger.info("ONNX graph %s from the cache", path)
        return graph
    graph = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as scratch:
            scratch.write(graph)
        os.replace(scratch.name, path)
    except OSError as exc:
        logger.warning(
            "cannot keep the exported graph in %s (%s); the next start exports it again", path, exc
        )
    return graph


def drop_cached_graph(key: str, *, cache: Path | None = None) -> None:
    """Forgets the graph under `key` (one that failed its check against torch), if there is one."""
    with contextlib.suppress(OSError):
        ((cache or graph_cache()) / f"{key}.onnx").unlink()
