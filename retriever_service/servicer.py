"""search.v1.RetrieverService: request checks, proto <-> domain conversion and status mapping only."""

from __future__ import annotations

import logging
import time

import grpc
import numpy as np
from google.protobuf.duration_pb2 import Duration
from search.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc

from retriever_service.metrics import RetrieverMetrics
from retriever_service.shards import validate_request
from search_common.documents import QueryEmbedding, RetrievalResult, RetrieverKind, ShardDescription
from search_common.errors import SearchError, Unavailable, abort_with
from search_common.ports import Retriever
from search_common.variant_label import VariantLabels

logger = logging.getLogger(__name__)

_KINDS = {"dense": retriever_pb2.RETRIEVER_KIND_DENSE, "bm25": retriever_pb2.RETRIEVER_KIND_BM25}


def shard_to_proto(shard: ShardDescription) -> retriever_pb2.ShardInfo:
    return retriever_pb2.ShardInfo(
        kind=_KINDS.get(shard.kind, retriever_pb2.RETRIEVER_KIND_UNSPECIFIED),
        shard_id=shard.shard_id,
        num_shards=shard.num_shards,
        index=common_pb2.ArtifactVersion(
            component=shard.component, name=shard.index_name, version=shard.index_version
        ),
        encoder=shard.encoder,
        num_documents=shard.num_documents,
    )


def embedding_from_proto(request: retriever_pb2.RetrieveRequest) -> QueryEmbedding | None:
    """The request's query embedding, or None when the caller sent the text only."""
    if not request.HasField("query_embedding"):
        return None
    given = request.query_embedding
    return QueryEmbedding(np.asarray(given.values, dtype=np.float32), given.encoder)


def result_to_proto(result: RetrievalResult) -> retriever_pb2.RetrieveResponse:
    timings = []
    for stage, seconds in result.timings.items():
        duration = Duration()
        duration.FromNanoseconds(int(seconds * 1e9))
        timings.append(
            common_pb2.StageTiming(stage=stage, duration=duration, component=result.shard.component)
        )
    return retriever_pb2.RetrieveResponse(
        candidates=[
            retriever_pb2.Candidate(
                document=common_pb2.Document(
                    doc_id=c.document.doc_id, title=c.document.title, text=c.document.text
                ),
                score=c.score,
                vector=() if c.vector is None else c.vector.tolist(),
            )
            for c in result.candidates
        ],
        shard=shard_to_proto(result.shard),
        timings=timings,
    )


class RetrieverServicer(retriever_pb2_grpc.RetrieverServiceServicer):  # type: ignore[misc]
    """Serves one shard; answers UNAVAILABLE until a retriever is attached (while the shard loads)."""

    def __init__(
        self,
        retriever: Retriever | None,
        *,
        max_top_k: int,
        max_query_chars: int,
        metrics: RetrieverMetrics | None = None,
        variant_labels: VariantLabels | None = None,
    ) -> None:
        self._retriever = retriever
        self._max_top_k = max_top_k
        self._max_query_chars = max_query_chars
        self._metrics = metrics or RetrieverMetrics(registry=None)
        self._labels = variant_labels or VariantLabels()
        self._kind: RetrieverKind | None = None

    def attach(self, retriever: Retriever, shard: ShardDescription | None = None) -> None:
        """Starts answering with `retriever`; `shard` labels errors that come before a first answer."""
        self._retriever = retriever
        if shard is not None:
            self._kind = shard.kind

    @property
    def retriever(self) -> Retriever | None:
        return self._retriever

    def _ready(self) -> Retriever:
        if self._retriever is None:
            raise Unavailable("the shard is still loading")
        return self._retriever

    async def Retrieve(
        self, request: retriever_pb2.RetrieveRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> retriever_pb2.RetrieveResponse:
        started = time.perf_counter()
        variant = self._labels.from_metadata(context.invocation_metadata())
        try:
            validate_request(
                request.query, request.top_k, max_top_k=self._max_top_k, max_query_chars=self._max_query_chars
            )
            retriever = self._ready()
            remaining = context.time_remaining()
            result = await retriever.retrieve(
                request.query,
                request.top_k,
                timeout=remaining,
                embedding=embedding_from_proto(request),
                with_vectors=request.include_vectors,
            )
        except Exception as exc:
            code = exc.code if isinstance(exc, SearchError) else grpc.StatusCode.INTERNAL
            self._metrics.record_error(self._kind, variant, code, time.perf_counter() - started)
            await abort_with(context, exc)
            raise  # unreachable: abort raises
        self._kind = result.shard.kind
        self._metrics.record_result(result.shard.kind, variant, result.timings)
        return result_to_proto(result)

    async def GetShardInfo(
        self, request: retriever_pb2.GetShardInfoRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> retriever_pb2.ShardInfo:
        try:
            shard = await self._ready().describe()
        except Exception as exc:
            await abort_with(context, exc)
            raise
        return shard_to_proto(shard)
