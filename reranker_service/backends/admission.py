"""Admission control for a scorer: a bound on requests admitted (running or waiting).

Overload then becomes RESOURCE_EXHAUSTED at once, which callers can retry elsewhere, instead of a queue
that grows until every request in it misses its deadline. Each scorer keeps its own bound in the reranker
process, so it holds for Triton as for the in-process engines (Triton's own queue policy is left off: in
Triton 2.51 any default_queue_policy slowed its dynamic batcher, see triton_models/cross_encoder).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from search_common.errors import ResourceExhausted


class AdmissionLimit:
    """Counts admitted requests on one event loop and refuses the one past `max_pending`."""

    def __init__(self, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._max_pending = max_pending
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Holds one place for the body's duration.

        Raises:
            ResourceExhausted: `max_pending` requests are already admitted.
        """
        if self._pending >= self._max_pending:
            raise ResourceExhausted(f"reranker busy: {self._pending} requests already waiting to be scored")
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1
