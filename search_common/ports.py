"""The narrow interfaces between stages.

The gateway's pipeline talks to first-stage retrievers and to a reranker only through these protocols, so the
same pipeline runs over gRPC clients in production and over in-process adapters in evaluation and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from search_common.documents import Document, RerankResult, RetrievalResult, ShardDescription


class Retriever(Protocol):
    """One shard of one first-stage index (dense or BM25)."""

    @property
    def component(self) -> str:
        """Bounded name for metadata and metrics, for example 'dense/shard-0'."""
        ...

    async def describe(self, timeout: float | None = None) -> ShardDescription: ...

    async def retrieve(self, query: str, k: int, timeout: float | None = None) -> RetrievalResult:
        """The shard's top-k candidates, best first.

        Raises:
            search_common.errors.SearchError subclasses: InvalidArgument, Unavailable, DeadlineExceeded.
        """
        ...

    async def close(self) -> None: ...


class Reranker(Protocol):
    """Scores (query, document) pairs jointly; the gateway's second stage."""

    async def rerank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        model: str = "",
        max_sequence_length: int = 0,
        use_cache: bool = True,
        timeout: float | None = None,
    ) -> RerankResult: ...

    async def close(self) -> None: ...
