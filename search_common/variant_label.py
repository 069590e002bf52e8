"""The A/B variant of a request as it travels downstream: gRPC metadata, a context variable, a bounded label.

The gateway resolves a variant per request and runs the pipeline inside `serving_variant(name)`; its gRPC
clients copy `current_variant()` into the `x-search-variant` metadata of every downstream call. Retrievers
and the reranker read it back with `VariantLabels.from_metadata`, which is the only way a caller-supplied
string becomes a Prometheus label value: it must match `VARIANT_NAME_PATTERN` (the same pattern variant
names in the gateway's variants file must match) and at most `max_values` distinct values are kept per
process; anything else is counted as "other", and a call with no variant as "none". So a misbehaving
client cannot blow up the series count of a downstream service.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
from collections.abc import Iterable, Iterator

VARIANT_METADATA_KEY = "x-search-variant"
VARIANT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
NO_VARIANT = "none"
OTHER_VARIANT = "other"
DEFAULT_MAX_VARIANT_LABELS = 32

_current: contextvars.ContextVar[str] = contextvars.ContextVar("search_variant", default="")


def current_variant() -> str:
    """The variant the current task serves, or "" outside `serving_variant`."""
    return _current.get()


@contextlib.contextmanager
def serving_variant(name: str) -> Iterator[None]:
    """Marks the enclosed code (and tasks it creates) as serving variant `name`."""
    token = _current.set(name)
    try:
        yield
    finally:
        _current.reset(token)


def variant_metadata() -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the current variant; empty outside `serving_variant`."""
    name = _current.get()
    return ((VARIANT_METADATA_KEY, name),) if name else ()


def is_valid_variant_name(name: str) -> bool:
    return VARIANT_NAME_PATTERN.fullmatch(name) is not None


class VariantLabels:
    """Turns caller-supplied variant names into a bounded set of label values (thread-safe)."""

    def __init__(self, max_values: int = DEFAULT_MAX_VARIANT_LABELS, known: Iterable[str] = ()) -> None:
        if max_values <= 0:
            raise ValueError(f"max_values must be positive, got {max_values}")
        self._max = max_values
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        for name in known:
            self.label(name)

    @property
    def seen(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._seen)

    def label(self, name: str | None) -> str:
        """`name` itself if valid and among the first `max_values` distinct names; else none/other."""
        if not name:
            return NO_VARIANT
        if not is_valid_variant_name(name) or name in (NO_VARIANT, OTHER_VARIANT):
            return OTHER_VARIANT
        with self._lock:
            if name in self._seen:
                return name
            if len(self._seen) >= self._max:
                return OTHER_VARIANT
            self._seen.add(name)
            return name

    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """The label for the `x-search-variant` value in gRPC invocation metadata."""
        for key, value in metadata or ():
            if key == VARIANT_METADATA_KEY:
                return self.label(value if isinstance(value, str) else OTHER_VARIANT)
        return NO_VARIANT
