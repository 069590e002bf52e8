"""In-process LRU score cache: the embedded default, and the fallback where there is no Redis."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence


class LruScoreCache:
    """At most `max_entries` scores; the least recently read or written go first. Event-loop only."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries <= 0:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self._max_entries = max_entries
        self._entries: OrderedDict[str, float] = OrderedDict()

    @property
    def errors(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        found: list[float | None] = []
        for key in keys:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            found.append(value)
        return found

    async def put_many(self, items: Mapping[str, float]) -> None:
        for key, value in items.items():
            self._entries[key] = float(value)
            self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()
