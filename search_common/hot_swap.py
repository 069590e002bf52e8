"""Hot swap plumbing shared by the retriever and the reranker: one reload at a time, old versions retired.

A reload (asked for by SIGHUP) loads and warms a new version beside the served one and swaps it in; the
version it replaced is closed only after a grace period, once the requests still running on it are done.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class Closeable(Protocol):
    async def close(self) -> None: ...


class SignalReloader(abc.ABC):
    """Runs `reload` on request, never two at once; `retire` closes a replaced version after the grace."""

    def __init__(self, grace_seconds: float, what: str) -> None:
        self._grace_seconds = grace_seconds
        self._what = what
        self._task: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()

    def request(self) -> None:
        if self._task is not None and not self._task.done():
            logger.warning("%s reload already in progress; SIGHUP ignored", self._what)
            return
        self._task = asyncio.get_running_loop().create_task(self.reload())

    @abc.abstractmethod
    async def reload(self) -> None:
        """Loads, checks and swaps in a new version; a bad one is logged and the served one kept."""

    def retire(self, old: Closeable) -> None:
        task = asyncio.get_running_loop().create_task(self._close_later(old))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _close_later(self, old: Closeable) -> None:
        await asyncio.sleep(self._grace_seconds)
        await old.close()
