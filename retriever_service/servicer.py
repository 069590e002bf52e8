"""search.v1.RetrieverService: request checks, proto <-> domain conversion and status mapping only."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc
import numpy as np
from google.protobuf.duration_pb2 import Duration
from search.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc

from retriever_service.metrics import RetrieverMetrics
from retriever_service.shards import validate_request
from search_common.artifacts import ArtifactError
from search_common.documents import (
    QueryEmbedding,
    RetrievalResult,
    RetrieverKind,
    ShardDescription,
    shards_component,
)
from search_common.errors import FailedPrecondition, InvalidArgument, SearchError, Unavailable, abort_with
from search_common.ports import Retriever
from search_common.retriever_kinds import kind_name, kind_number
from search_common.variant_label import VariantLabels

logger = logging.getLogger(__name__)

Served = dict[RetrieverKind, tuple[Retriever, tuple[ShardDescription, ...]]]


def shard_to_proto(shard: ShardDescription) -> retriever_pb2.ShardInfo:
    return retriever_pb2.ShardInfo(
        kind=kind_number(shard.kind),
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
            common_pb2.StageTiming(stage=stage, duration=duration, component=shards_component(result.covered))
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
        searched=[shard_to_proto(shard) for shard in result.covered],
    )


class RetrieverServicer(retriever_pb2_grpc.RetrieverServiceServicer):  # type: ignore[misc]
    """Serves one shard, or several of one or two kinds (one retriever per kind); answers UNAVAILABLE until
    the retrievers are attached (while the shards load)."""

    def __init__(
        self,
        retrievers: Sequence[Retriever] = (),
        *,
        max_top_k: int,
        max_query_chars: int,
        metrics: RetrieverMetrics | None = None,
        variant_labels: VariantLabels | None = None,
    ) -> None:
        self._retrievers = tuple(retrievers)
        # kind -> (its retriever, its shards); described at attach, or at the first call for retrievers
        # given to the constructor (in-process use). Replaced whole, so a request sees old or new.
        self._served: Served | None = None
        self._max_top_k = max_top_k
        self._max_query_chars = max_query_chars
        self._metrics = metrics or RetrieverMetrics(registry=None)
        self._labels = variant_labels or VariantLabels()

    def attach(self, retrievers: Sequence[Retriever], served: Served) -> None:
        """Starts answering with `retrievers`, described by kind in `served` (see `describe_served`)."""
        self._retrievers, self._served = tuple(retrievers), served

    @property
    def retrievers(self) -> tuple[Retriever, ...]:
        return self._retrievers

    @property
    def served(self) -> Served | None:
        """The attached retrievers by kind, with their shards; None before they are described."""
        return self._served

    async def _ready(self) -> Served:
        served = self._served
        if served is None:
            if not self._retrievers:
                raise Unavailable("the shards are still loading")
            served = self._served = await describe_served(self._retrievers)
        return served

    def _route(self, served: Served, number: int) -> tuple[RetrieverKind, Retriever]:
        kinds = sorted(served)
        if number == retriever_pb2.RETRIEVER_KIND_UNSPECIFIED:
            if len(kinds) > 1:
                raise InvalidArgument(f"this server serves {' and '.join(kinds)} shards: set kind")
            return kinds[0], served[kinds[0]][0]
        kind = kind_name(number)
        if kind is None or kind not in served:
            raise InvalidArgument(
                f"this server serves no {kind or number} shard (it serves {', '.join(kinds)})"
            )
        return kind, served[kind][0]

    async def Retrieve(
        self, request: retriever_pb2.RetrieveRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> retriever_pb2.RetrieveResponse:
        started = time.perf_counter()
        variant = self._labels.from_metadata(context.invocation_metadata())
        kind: RetrieverKind | None = None
        try:
            validate_request(
                request.query, request.top_k, max_top_k=self._max_top_k, max_query_chars=self._max_query_chars
            )
            served = await self._ready()
            kind, retriever = self._route(served, request.kind)
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
            self._metrics.record_error(kind, variant, code, time.perf_counter() - started)
            await abort_with(context, exc)
            raise  # unreachable: abort raises
        self._metrics.record_result(result.shard.kind, variant, result.timings)
        return result_to_proto(result)

    async def GetShardInfo(
        self, request: retriever_pb2.GetShardInfoRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> retriever_pb2.ShardInfo:
        try:
            shards = [shard for _, described in (await self._ready()).values() for shard in described]
            if len(shards) > 1:
                raise FailedPrecondition(f"this server serves {len(shards)} shards: call ListShards")
        except Exception as exc:
            await abort_with(context, exc)
            raise
        return shard_to_proto(shards[0])

    async def ListShards(
        self, request: retriever_pb2.ListShardsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> retriever_pb2.ListShardsResponse:
        try:
            served = await self._ready()
        except Exception as exc:
            await abort_with(context, exc)
            raise
        wanted = kind_name(request.kind)
        return retriever_pb2.ListShardsResponse(
            shards=[
                shard_to_proto(shard)
                for kind in sorted(served)
                if wanted is None or kind == wanted
                for shard in served[kind][1]
            ]
        )


async def describe_served(retrievers: Sequence[Retriever]) -> Served:
    """The retrievers by the kind of their shards; two for one kind is an error."""
    served: Served = {}
    for retriever in retrievers:
        shards = await retriever.describe_all()
        kind = shards[0].kind
        if kind in served:
            raise ArtifactError(f"two {kind} indexes given to one server; one per kind")
        served[kind] = (retriever, shards)
    return served
