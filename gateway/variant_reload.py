"""The variants a gateway serves now: `LiveVariants` swaps in a new table atomically when the file changes or
on SIGHUP, and keeps the old one when the new file is bad.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from gateway.variants import FusionFit, VariantBounds, VariantError, VariantTable, load_variants

logger = logging.getLogger(__name__)


ReloadListener = Callable[["VariantTable | None"], None]
_FileStamp = tuple[int, int, int]


def _stamp(path: Path) -> _FileStamp | None:
    """(inode, size, mtime_ns) of the file a path resolves to; a Kubernetes ConfigMap update swaps a
    symlink, which changes the inode even when size and mtime happen to match."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class LiveVariants:
    """The variants a gateway serves now, replaced atomically by `reload`.

    Args:
        table: the table loaded at startup (already restricted to this deployment).
        path: the variants file, or None for the packaged default.
        bounds, groups, has_reranker, reranker_models: as at startup; a reloaded file is checked against
            the same ones.
        listener: called with the new table after a successful reload, or None after a rejected one.
    """

    def __init__(
        self,
        table: VariantTable,
        path: Path | None = None,
        bounds: VariantBounds | None = None,
        groups: Collection[str] = (),
        has_reranker: bool = False,
        listener: ReloadListener | None = None,
        *,
        reloadable: bool = True,
        has_query_encoder: bool = True,
        fusion_models: Mapping[str, FusionFit] | None = None,
        reranker_models: Collection[str] | None = None,
    ) -> None:
        self._fixed = not reloadable
        self._reranker_models = frozenset(reranker_models) if reranker_models is not None else None
        self._has_query_encoder = has_query_encoder
        self._fusion_models = dict(fusion_models or {})
        self._table = table
        self._path = path
        self._bounds = bounds or VariantBounds()
        self._groups = frozenset(groups)
        self._has_reranker = has_reranker
        self._listener = listener
        self._stamp = _stamp(path) if path is not None else None

    @classmethod
    def fixed(cls, table: VariantTable) -> LiveVariants:
        """A table that never reloads (reload keeps it)."""
        return cls(table, reloadable=False)

    @property
    def current(self) -> VariantTable:
        """The table to serve one request with; read it once per request."""
        return self._table

    def set_listener(self, listener: ReloadListener | None) -> None:
        self._listener = listener

    def reload(self) -> bool:
        """Loads and validates the file again; swaps it in when valid, else keeps the current table."""
        if self._fixed:
            logger.info("variants: nothing to reload (fixed table)")
            return False
        stamp = _stamp(self._path) if self._path is not None else None
        try:
            table = load_variants(self._path, self._bounds).restricted_to(
                self._groups,
                self._has_reranker,
                has_query_encoder=self._has_query_encoder,
                fusion_models=self._fusion_models,
                reranker_models=self._reranker_models,
            )
        except VariantError as exc:
            self._stamp = stamp  # do not retry the same bad file on every poll
            logger.error("variants reload rejected, keeping the previous variants: %s", exc)
            if self._listener is not None:
                self._listener(None)
            return False
        self._table = table  # one reference assignment: atomic for every reader
        self._stamp = stamp
        logger.info(
            "variants reloaded from %s: %s (default %s)",
            self._path or "the packaged file",
            ", ".join(f"{v.name}={v.weight:g}" for v in table.variants.values()),
            table.default_name,
        )
        if self._listener is not None:
            self._listener(table)
        return True

    def changed_on_disk(self) -> bool:
        return self._path is not None and _stamp(self._path) != self._stamp

    async def watch(self, interval_seconds: float = 2.0) -> None:
        """Polls the file and reloads when it changes; runs until cancelled (no-op without a file)."""
        if self._path is None or self._fixed:
            return
        while True:
            await asyncio.sleep(interval_seconds)
            if self.changed_on_disk():
                self.reload()
