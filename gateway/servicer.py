"""search.v1.SearchService: request validation, proto ↔ domain conversion, status mapping. No wiring.

Bad input is INVALID_ARGUMENT with a message saying what is wrong and what is allowed; the pipeline's
domain errors map to their codes through `search_common.errors.abort_with`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from search.v1 import common_pb2, search_service_pb2, search_service_pb2_grpc

from gateway.metrics import GatewayMetrics
from gateway.pipeline import SearchOutcome, SearchPipeline, SearchQuery
from gateway.variant_reload import LiveVariants
from gateway.variants import VariantTable
from search_common.errors import InvalidArgument, SearchError, abort_with

logger = logging.getLogger(__name__)

MAX_CALLER_KEY_CHARS = 512
_STAGES = {"retrieve": search_service_pb2.STAGE_RETRIEVE, "rerank": search_service_pb2.STAGE_RERANK}
_REASONS = {
    "deadline_exceeded": search_service_pb2.DEGRADATION_REASON_DEADLINE_EXCEEDED,
    "unavailable": search_service_pb2.DEGRADATION_REASON_UNAVAILABLE,
    "error": search_service_pb2.DEGRADATION_REASON_ERROR,
    "cache_bypassed": search_service_pb2.DEGRADATION_REASON_CACHE_BYPASSED,
    "overloaded": search_service_pb2.DEGRADATION_REASON_OVERLOADED,
}


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_top_k: int = 100
    max_query_chars: int = 2048
    max_retrieval_depth: int = 1000
    max_rerank_depth: int = 200


def resolve_request(
    request: search_service_pb2.SearchRequest, limits: RequestLimits, variants: VariantTable
) -> SearchQuery:
    """Checks a request against the configured bounds and resolves its variant and depths.

    Raises:
        InvalidArgument: with a message naming the field, the value and what is allowed.
    """
    text = request.query
    if not text.strip():
        raise InvalidArgument("query must not be empty or only whitespace")
    if len(text) > limits.max_query_chars:
        raise InvalidArgument(f"query is {len(text)} characters long; the limit is {limits.max_query_chars}")
    if not 1 <= request.top_k <= limits.max_top_k:
        raise InvalidArgument(f"top_k must be within [1, {limits.max_top_k}], got {request.top_k}")
    if len(request.caller_key) > MAX_CALLER_KEY_CHARS:
        raise InvalidArgument(f"caller_key is longer than {MAX_CALLER_KEY_CHARS} characters")
    variant = variants.get(request.variant) if request.variant else variants.assign(request.caller_key)
    retrieval_depth = variant.retrieval_depth
    rerank_depth = variant.rerank_depth if variant.reranks else 0
    overrides = request.overrides
    if overrides.HasField("retrieval_depth"):
        retrieval_depth = overrides.retrieval_depth
        if not 1 <= retrieval_depth <= limits.max_retrieval_depth:
            raise InvalidArgument(
                f"overrides.retrieval_depth must be within [1, {limits.max_retrieval_depth}], "
                f"got {retrieval_depth}"
            )
    if overrides.HasField("rerank_depth"):
        rerank_depth = overrides.rerank_depth
        if not 0 <= rerank_depth <= limits.max_rerank_depth:
            raise InvalidArgument(
                f"overrides.rerank_depth must be within [0, {limits.max_rerank_depth}], got {rerank_depth}"
            )
        if rerank_depth > 0 and variant.reranker is None:
            raise InvalidArgument(
                f"overrides.rerank_depth is {rerank_depth} but variant {variant.name!r} has no reranker"
            )
    return SearchQuery(text, request.top_k, variant, retrieval_depth, rerank_depth)


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(max(0, round(seconds * 1e9)))
    return duration


def outcome_to_proto(outcome: SearchOutcome) -> search_service_pb2.SearchResponse:
    hits = [
        search_service_pb2.SearchHit(
            doc_id=h.document.doc_id,
            title=h.document.title,
            snippet=h.snippet,
            score=h.score,
            retrieval_score=h.retrieval_score,
            rerank_score=h.rerank_score,
            rank=h.rank,
        )
        for h in outcome.hits
    ]
    coverage = outcome.coverage
    metadata = search_service_pb2.ResponseMetadata(
        variant=outcome.variant,
        versions=[
            common_pb2.ArtifactVersion(component=v.component, name=v.name, version=v.version)
            for v in outcome.versions
        ],
        timings=[
            common_pb2.StageTiming(stage=t.stage, duration=_duration(t.seconds), component=t.component)
            for t in outcome.timings
        ],
        coverage=search_service_pb2.Coverage(
            degraded=coverage.degraded,
            degradations=[
                search_service_pb2.Degradation(
                    stage=_STAGES[d.stage], reason=_REASONS[d.reason], detail=d.detail, component=d.component
                )
                for d in coverage.degradations
            ],
            shards_queried=coverage.shards_queried,
            shards_answered=coverage.shards_answered,
        ),
    )
    return search_service_pb2.SearchResponse(hits=hits, metadata=metadata)


class SearchServicer(search_service_pb2_grpc.SearchServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        pipeline: SearchPipeline,
        variants: VariantTable | LiveVariants,
        limits: RequestLimits,
        default_deadline_seconds: float,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._metrics = metrics or GatewayMetrics(registry=None)
        self._pipeline = pipeline
        self._variants = variants if isinstance(variants, LiveVariants) else LiveVariants.fixed(variants)
        self._limits = limits
        self._default_deadline = default_deadline_seconds

    async def Search(
        self,
        request: search_service_pb2.SearchRequest,
        context: grpc.aio.ServicerContext[
            search_service_pb2.SearchRequest, search_service_pb2.SearchResponse
        ],
    ) -> search_service_pb2.SearchResponse:
        started = time.monotonic()
        remaining = context.time_remaining()
        deadline = started + (self._default_deadline if remaining is None else remaining)
        variant: str | None = None
        try:
            # One read of the live table per request: a reload during the request does not affect it.
            query = resolve_request(request, self._limits, self._variants.current)
            variant = query.variant.name
            outcome = await self._pipeline.search(query, deadline)
        except Exception as exc:
            code = exc.code if isinstance(exc, SearchError) else grpc.StatusCode.INTERNAL
            self._metrics.record_error(variant, code, time.monotonic() - started)
            await abort_with(context, exc)  # type: ignore[arg-type]
            raise AssertionError("unreachable: abort raises") from exc
        self._metrics.record_outcome(outcome, time.monotonic() - started)
        if outcome.coverage.degraded:
            logger.info(
                "degraded answer: %s",
                "; ".join(f"{d.stage} {d.component} {d.reason}" for d in outcome.coverage.degradations),
            )
        return outcome_to_proto(outcome)
