"""gRPC adapters of the pipeline's ports: retriever shards and the reranker, over long-lived aio channels.

Each adapter owns one channel to one downstream address, opened when the gateway starts and closed when it
stops (never one per request). Every call carries `timeout=`; a failed call becomes a domain error through
`search_common.errors.from_rpc_error`, so the pipeline never sees gRPC types. Degradation details and errors
name the component ("dense/shard-1", "reranker"), never a host or port.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import grpc
import numpy as np
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc, retriever_pb2, retriever_pb2_grpc

from search_common.documents import (
    Candidate,
    Document,
    QueryEmbedding,
    RerankResult,
    RetrievalResult,
    ShardDescription,
    shards_component,
)
from search_common.errors import Unavailable, from_rpc_error
from search_common.grpc_server import message_size_options
from search_common.retriever_kinds import kind_name, kind_number
from search_common.tls import ClientTls, aio_channel
from search_common.variant_label import variant_metadata

logger = logging.getLogger(__name__)

# Used when a caller passes no timeout (startup probes, tools); the pipeline always passes one.
DEFAULT_CALL_TIMEOUT_SECONDS = 30.0
# round_robin spreads calls over every address a target resolves to: a `dns:///` target naming a Kubernetes
# headless Service resolves to all ready pods (the default pick_first would pin one). A single-address
# target such as 127.0.0.1:7001 behaves as before.
LOAD_BALANCING_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    *message_size_options(),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.service_config", LOAD_BALANCING_SERVICE_CONFIG),
]


def _call_timeout(timeout: float | None) -> float:
    return DEFAULT_CALL_TIMEOUT_SECONDS if timeout is None else max(timeout, 0.0)


def timings_from_proto(timings: Sequence[common_pb2.StageTiming]) -> dict[str, float]:
    return {t.stage: t.duration.seconds + t.duration.nanos / 1e9 for t in timings}


def document_to_proto(document: Document) -> common_pb2.Document:
    return common_pb2.Document(doc_id=document.doc_id, title=document.title, text=document.text)


def shard_from_proto(info: retriever_pb2.ShardInfo, component: str) -> ShardDescription:
    kind = kind_name(info.kind)
    if kind is None:
        raise Unavailable(f"{component}: shard reports no retriever kind")
    return ShardDescription(
        kind=kind,
        shard_id=info.shard_id,
        num_shards=info.num_shards,
        index_name=info.index.name,
        index_version=info.index.version,
        num_documents=info.num_documents,
        encoder=info.encoder,
    )


class GrpcRetriever:
    """The shards of one group (dense, bm25) that one search.v1.RetrieverService address serves: one shard,
    or several in one process (`retriever_service.shard_group`), which may also serve the other group's.

    `component` starts as "<group>/shard-<position>" (position in the configured list) and becomes the
    shards' own "<kind>/shard-<id>" ("<kind>/shards-0-2" for several) once `describe_all` has answered.
    """

    def __init__(self, group: str, position: int, address: str, tls: ClientTls | None = None) -> None:
        self._component = f"{group}/shard-{position}"
        self._kind = kind_number(group)
        self._shard_count = 1  # until described
        self._channel = aio_channel(address, CHANNEL_OPTIONS, tls)
        self._stub = retriever_pb2_grpc.RetrieverServiceStub(self._channel)

    @property
    def component(self) -> str:
        return self._component

    @property
    def shard_count(self) -> int:
        return self._shard_count

    async def describe(self, timeout: float | None = None) -> ShardDescription:
        return (await self.describe_all(timeout))[0]

    async def describe_all(self, timeout: float | None = None) -> tuple[ShardDescription, ...]:
        try:
            listed = await self._stub.ListShards(
                retriever_pb2.ListShardsRequest(kind=self._kind), timeout=_call_timeout(timeout)
            )
            infos = list(listed.shards)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise from_rpc_error(exc, self._component) from None
            try:  # a retriever from before ListShards serves one shard
                infos = [
                    await self._stub.GetShardInfo(
                        retriever_pb2.GetShardInfoRequest(), timeout=_call_timeout(timeout)
                    )
                ]
            except grpc.aio.AioRpcError as again:
                raise from_rpc_error(again, self._component) from None
        if not infos:
            raise Unavailable(f"{self._component}: the retriever serves no shard of this kind")
        shards = tuple(shard_from_proto(info, self._component) for info in infos)
        self._component = shards_component(shards)
        self._shard_count = len(shards)
        return shards

    async def retrieve(
        self,
        query: str,
        k: int,
        timeout: float | None = None,
        *,
        embedding: QueryEmbedding | None = None,
        with_vectors: bool = False,
    ) -> RetrievalResult:
        request = retriever_pb2.RetrieveRequest(
            query=query, top_k=k, include_vectors=with_vectors, kind=self._kind
        )
        if embedding is not None:
            request.query_embedding.values.extend(embedding.values.tolist())
            request.query_embedding.encoder = embedding.encoder
        try:
            response = await self._stub.Retrieve(
                request,
                timeout=_call_timeout(timeout),
                metadata=variant_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, self._component) from None
        candidates = [
            Candidate(
                Document(c.document.doc_id, c.document.title, c.document.text),
                c.score,
                np.asarray(c.vector, dtype=np.float32) if c.vector else None,
            )
            for c in response.candidates
        ]
        searched = tuple(shard_from_proto(info, self._component) for info in response.searched)
        return RetrievalResult(
            candidates,
            shard_from_proto(response.shard, self._component),
            timings_from_proto(response.timings),
            shards=searched,
        )

    async def close(self) -> None:
        await self._channel.close()


class GrpcReranker:
    """The reranker behind search.v1.RerankerService."""

    component = "reranker"

    def __init__(self, address: str, tls: ClientTls | None = None) -> None:
        self._channel = aio_channel(address, CHANNEL_OPTIONS, tls)
        self._stub = reranker_pb2_grpc.RerankerServiceStub(self._channel)

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
        request = reranker_pb2.RerankRequest(
            query=query,
            documents=[document_to_proto(d) for d in documents],
            model=model,
            max_sequence_length=max_sequence_length,
            use_cache=use_cache,
        )
        try:
            response = await self._stub.Rerank(
                request, timeout=_call_timeout(timeout), metadata=variant_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, self.component) from None
        if len(response.scores) != len(documents):
            raise Unavailable(f"reranker: {len(response.scores)} scores for {len(documents)} documents")
        return RerankResult(
            scores=list(response.scores),
            model_name=response.model.name,
            model_version=response.model.version,
            cache_hits=response.cache_hits,
            timings=timings_from_proto(response.timings),
            cache_bypassed=response.cache_bypassed,
        )

    async def close(self) -> None:
        await self._channel.close()
