"""RerankerService over gRPC: proto <-> domain conversion and status mapping only."""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from search_common.documents import Document
from search_common.errors import Unavailable, abort_with
from search_common.ports import Reranker

COMPONENT = "reranker"


class RerankerServicer(reranker_pb2_grpc.RerankerServiceServicer):  # type: ignore[misc]
    def __init__(self, reranker: Reranker | None = None) -> None:
        self._reranker = reranker

    def attach(self, reranker: Reranker) -> None:
        self._reranker = reranker

    async def Rerank(
        self,
        request: reranker_pb2.RerankRequest,
        context: grpc.aio.ServicerContext[reranker_pb2.RerankRequest, reranker_pb2.RerankResponse],
    ) -> reranker_pb2.RerankResponse:
        try:
            if self._reranker is None:
                raise Unavailable("reranker is still loading")
            documents = [Document(d.doc_id, d.title, d.text) for d in request.documents]
            result = await self._reranker.rerank(
                request.query,
                documents,
                model=request.model,
                max_sequence_length=request.max_sequence_length,
                use_cache=request.use_cache,
                timeout=context.time_remaining(),
            )
        except Exception as exc:
            await abort_with(context, exc)  # type: ignore[arg-type]
            raise AssertionError("unreachable: abort raises") from exc
        timings = []
        for stage, seconds in result.timings.items():
            duration = Duration()
            duration.FromNanoseconds(int(seconds * 1e9))
            timings.append(common_pb2.StageTiming(stage=stage, duration=duration, component=COMPONENT))
        return reranker_pb2.RerankResponse(
            scores=result.scores,
            model=common_pb2.ArtifactVersion(
                component=COMPONENT, name=result.model_name, version=result.model_version
            ),
            cache_hits=result.cache_hits,
            timings=timings,
        )
