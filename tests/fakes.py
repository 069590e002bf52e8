"""Plain fakes of the ports in search_common.ports, for unit tests of pure pipeline logic.

Integration tests never use these: they run real retrievers, rerankers and gRPC servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from search_common.documents import (
    Candidate,
    Document,
    QueryEmbedding,
    RerankResult,
    RetrievalResult,
    RetrieverKind,
    ShardDescription,
)
from search_common.errors import SearchError


class FakeRetriever:
    """A shard that ranks its documents by a fixed score table, or fails, or hangs, as told."""

    def __init__(
        self,
        kind: RetrieverKind,
        shard_id: int,
        scored: Sequence[tuple[Document, float]],
        *,
        num_shards: int = 1,
        error: SearchError | None = None,
        delay: float = 0.0,
    ) -> None:
        self._scored = list(scored)
        self.error = error
        self.delay = delay
        self.calls: list[tuple[str, int, float | None]] = []
        self.embeddings: list[QueryEmbedding | None] = []
        self._shard = ShardDescription(kind, shard_id, num_shards, f"fake-{kind}", "v1", len(self._scored))

    @property
    def component(self) -> str:
        return self._shard.component

    async def describe(self, timeout: float | None = None) -> ShardDescription:
        return self._shard

    async def retrieve(
        self,
        query: str,
        k: int,
        timeout: float | None = None,
        *,
        embedding: QueryEmbedding | None = None,
    ) -> RetrievalResult:
        self.calls.append((query, k, timeout))
        self.embeddings.append(embedding)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        ranked = sorted(self._scored, key=lambda pair: (-pair[1], pair[0].doc_id))[:k]
        return RetrievalResult(
            [Candidate(doc, score) for doc, score in ranked], self._shard, {"search": 0.001}
        )

    async def close(self) -> None:
        return None


class FakeReranker:
    """Scores documents with a function of (query, document), or fails, or hangs."""

    def __init__(
        self,
        score: Callable[[str, Document], float],
        *,
        error: SearchError | None = None,
        delay: float = 0.0,
    ) -> None:
        self._score = score
        self.error = error
        self.delay = delay
        self.calls: list[tuple[str, list[str], str, float | None]] = []

    async def rerank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        model: str = "",
        max_sequence_length: int = 0,
        use_cache: bool = True,
        timeout: float | None = None,
    ) -> RerankResult:
        self.calls.append((query, [d.doc_id for d in documents], model, timeout))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return RerankResult([self._score(query, d) for d in documents], model or "fake-ce", "v1")

    async def close(self) -> None:
        return None
