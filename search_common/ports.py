"""The narrow interfaces between stages.

The gateway's pipeline talks to first-stage retrievers and to a reranker only through these protocols, so the
same pipeline runs over gRPC clients in production and over in-process adapters in evaluation and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from search_common.documents import (
    Document,
    QueryEmbedding,
    RerankResult,
    RetrievalResult,
    ShardDescription,
)


class Retriever(Protocol):
    """One shard of one first-stage index (dense or BM25), or several shards of it searched together."""

    @property
    def component(self) -> str:
        """Bounded name for metadata and metrics, for example 'dense/shard-0' or 'dense/shards-0-2'."""
        ...

    @property
    def shard_count(self) -> int:
        """How many shards an answer covers (1 for one shard; known for a remote one once described)."""
        ...

    async def describe(self, timeout: float | None = None) -> ShardDescription:
        """The (first) shard."""
        ...

    async def describe_all(self, timeout: float | None = None) -> tuple[ShardDescription, ...]:
        """Every shard an answer covers, by shard id."""
        ...

    async def retrieve(
        self,
        query: str,
        k: int,
        timeout: float | None = None,
        *,
        embedding: QueryEmbedding | None = None,
        with_vectors: bool = False,
    ) -> RetrievalResult:
        """The shard's top-k candidates, best first.

        A dense shard given `embedding` searches with it instead of embedding `query` (and reports no
        "embed" timing); a BM25 shard ignores it. With `with_vectors` a dense shard sets each candidate's
        `vector` to the document's stored vector (for pseudo-relevance feedback); a BM25 shard sets none.

        Raises:
            search_common.errors.SearchError subclasses: InvalidArgument (also a bad embedding),
            FailedPrecondition (an embedding from another encoder), Unavailable, DeadlineExceeded.
        """
        ...

    async def close(self) -> None: ...


# What can embed a query: a BiEncoder on torch, or its ONNX export (model_runtimes.query_encoder_onnx).
QueryEncoderEngine = Literal["auto", "torch", "onnx"]
QUERY_ENCODER_ENGINES: tuple[QueryEncoderEngine, ...] = ("auto", "torch", "onnx")


class QueryEncoder(Protocol):
    """Embeds queries for dense retrieval (model_runtimes.bi_encoder.BiEncoder)."""

    @property
    def identity(self) -> str:
        """The encoder's identity, as a dense shard built with it reports in ShardDescription.encoder."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """float32 (n, dim), in input order (blocking: call it off the event loop)."""
        ...


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
