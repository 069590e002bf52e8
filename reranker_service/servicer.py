"""RerankerService over gRPC: proto <-> domain conversion and status mapping only."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.duration_pb2 import Duration
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from reranker_service.metrics import RerankerMetrics
from search_common.documents import Document
from search_common.errors import SearchError, Unavailable, abort_with
from search_common.ports import Reranker
from search_common.variant_label import VariantLabels, serving_variant

COMPONENT = "reranker"


class RerankerServicer(reranker_pb2_grpc.RerankerServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        reranker: Reranker | None = None,
        metrics: RerankerMetrics | None = None,
        variant_labels: VariantLabels | None = None,
    ) -> None:
        self._reranker = reranker
        self._metrics = metrics
        self._labels = variant_labels or VariantLabels()
        self._waiting_for: Callable[[], str] | None = None

    def attach(self, reranker: Reranker) -> None:
        self._reranker = reranker

    def waiting_for(self, describe: Callable[[], str]) -> None:
        """Until a model is attached, Rerank answers UNAVAILABLE with `describe()`: what the wait is for."""
        self._waiting_for = describe

    async def Rerank(
        self,
        request: reranker_pb2.RerankRequest,
        context: grpc.aio.ServicerContext[reranker_pb2.RerankRequest, reranker_pb2.RerankResponse],
    ) -> reranker_pb2.RerankResponse:
        # The caller's variant, bounded, labels this request's stage metrics (read by the core).
        variant = self._labels.from_metadata(context.invocation_metadata())
        try:
            if self._reranker is None:
                why = self._waiting_for() if self._waiting_for is not None else "the model is loading"
                raise Unavailable(f"reranker has no model yet: {why}")
            documents = [Document(d.doc_id, d.title, d.text) for d in request.documents]
            with serving_variant(variant):
                result = await self._reranker.rerank(
                    request.query,
                    documents,
                    model=request.model,
                    max_sequence_length=request.max_sequence_length,
                    use_cache=request.use_cache,
                    timeout=context.time_remaining(),
                )
        except Exception as exc:
            if self._metrics is not None:
                code = exc.code if isinstance(exc, SearchError) else grpc.StatusCode.INTERNAL
                self._metrics.record_request(variant, code)
            await abort_with(context, exc)  # type: ignore[arg-type]
            raise AssertionError("unreachable: abort raises") from exc
        if self._metrics is not None:
            self._metrics.record_request(variant, grpc.StatusCode.OK)
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
            cache_bypassed=result.cache_bypassed,
        )
