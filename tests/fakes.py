"""Plain fakes of the ports in search_common.ports, for unit tests of pure pipeline logic.

Integration tests never use these: they run real retrievers, rerankers and gRPC servers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from search_common.documents import (
    Candidate,
    Document,
    QueryEmbedding,
    RerankResult,
    RetrievalResult,
    RetrieverKind,
    ShardDescription,
)
from search_common.errors import FailedPrecondition, SearchError


class FakeRetriever:
    """A shard that ranks its documents by a fixed score table, or fails, or hangs, as told.

    With `vectors` (doc_id -> stored vector) it attaches them when asked `with_vectors`, as a dense shard
    does; the score table stays fixed whatever query vector comes (`embeddings` records each one).
    """

    def __init__(
        self,
        kind: RetrieverKind,
        shard_id: int,
        scored: Sequence[tuple[Document, float]],
        *,
        num_shards: int = 1,
        error: SearchError | None = None,
        delay: float = 0.0,
        encoder: str = "",
        on_call: Callable[[], None] | None = None,
        vectors: dict[str, npt.NDArray[np.float32]] | None = None,
    ) -> None:
        self._scored = list(scored)
        self._vectors = vectors or {}
        self.on_call = on_call
        # A dense shard's encoder identity: an embedding from another one is refused, as real shards do.
        self.encoder = encoder
        self.error = error
        self.delay = delay
        self.calls: list[tuple[str, int, float | None]] = []
        self.embeddings: list[QueryEmbedding | None] = []
        self._shard = ShardDescription(kind, shard_id, num_shards, f"fake-{kind}", "v1", len(self._scored))

    @property
    def component(self) -> str:
        return self._shard.component

    @property
    def shard_count(self) -> int:
        return 1

    async def describe(self, timeout: float | None = None) -> ShardDescription:
        return self._shard

    async def describe_all(self, timeout: float | None = None) -> tuple[ShardDescription, ...]:
        return (self._shard,)

    async def retrieve(
        self,
        query: str,
        k: int,
        timeout: float | None = None,
        *,
        embedding: QueryEmbedding | None = None,
        with_vectors: bool = False,
    ) -> RetrievalResult:
        self.calls.append((query, k, timeout))
        self.embeddings.append(embedding)
        if self.on_call is not None:
            self.on_call()
        if embedding is not None and self.encoder and embedding.encoder != self.encoder:
            raise FailedPrecondition(f"{self.component}: built with {self.encoder}, not {embedding.encoder}")
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        ranked = sorted(self._scored, key=lambda pair: (-pair[1], pair[0].doc_id))[:k]
        return RetrievalResult(
            [
                Candidate(doc, score, self._vectors.get(doc.doc_id) if with_vectors else None)
                for doc, score in ranked
            ],
            self._shard,
            {"search": 0.001},
        )

    async def close(self) -> None:
        return None


class FakeQueryEncoder:
    """Embeds every query as the same fixed vector; counts its calls.

    With `gate`, each call first waits (in its worker thread) until the event is set, at most
    `gate_timeout` seconds, then fails if it was not: a test can make embedding wait on another event.
    """

    def __init__(
        self, identity: str, dim: int = 4, *, gate: threading.Event | None = None, gate_timeout: float = 5.0
    ) -> None:
        self._identity = identity
        self._dim = dim
        self._gate = gate
        self._gate_timeout = gate_timeout
        self.calls: list[list[str]] = []

    @property
    def identity(self) -> str:
        return self._identity

    def encode_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        if self._gate is not None and not self._gate.wait(self._gate_timeout):
            raise RuntimeError("FakeQueryEncoder: gate never opened")
        return np.full((len(texts), self._dim), 0.5, dtype=np.float32)


class FakeReranker:
    """Scores documents with a function of (query, document), or fails, or hangs."""

    def __init__(
        self,
        score: Callable[[str, Document], float],
        *,
        error: SearchError | None = None,
        delay: float = 0.0,
        cache_bypassed: bool = False,
    ) -> None:
        self._score = score
        self.error = error
        self.delay = delay
        self.cache_bypassed = cache_bypassed
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
        scores = [self._score(query, d) for d in documents]
        return RerankResult(scores, model or "fake-ce", "v1", cache_bypassed=self.cache_bypassed)

    async def close(self) -> None:
        return None
