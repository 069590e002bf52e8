"""The gateway's Prometheus metrics: one place, built against a registry (tests pass a fresh one).

Names follow `search_gateway_*` with base units. Label values come from small bounded sets: `variant` from
the variants file (plus "unresolved" for requests rejected before a variant was chosen), `code` a gRPC status
name, `stage` retrieve|merge|rerank|total, `component` a configured shard ("dense/shard-1") or "reranker",
`result` ok|deadline_exceeded|unavailable|error. Series for every known combination exist at zero up front.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from gateway.pipeline import SearchOutcome

UNRESOLVED = "unresolved"
STAGES = ("retrieve", "merge", "rerank", "total")
RESULTS = ("ok", "deadline_exceeded", "unavailable", "error")
CODES = ("OK", "INVALID_ARGUMENT", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL")
DEGRADED_STAGES = ("retrieve", "rerank")
# Requests span 1 ms (cached BM25) to the multi-second deadline of a reranked query.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.requests = Counter(
            "search_gateway_requests",
            "Search requests by served variant and gRPC status code.",
            ["variant", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "search_gateway_request_duration_seconds",
            "Wall time of answered search requests, by variant.",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage_duration = Histogram(
            "search_gateway_stage_duration_seconds",
            "Time per pipeline stage as the gateway measured it (retrieve: per shard call).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.downstream_requests = Counter(
            "search_gateway_downstream_requests",
            "Calls to retriever shards and the reranker, by component and result.",
            ["component", "result"],
            registry=registry,
        )
        self.degraded_responses = Counter(
            "search_gateway_degraded_responses",
            "Responses served with partial results or without reranking, by the stage that degraded.",
            ["stage"],
            registry=registry,
        )

    def prepare(self, variants: Iterable[str], components: Iterable[str]) -> None:
        """Creates every known series at zero, so dashboards see them before the first event."""
        for variant in (*variants, UNRESOLVED):
            for code in CODES:
                self.requests.labels(variant=variant, code=code)
            self.request_duration.labels(variant=variant)
        for stage in STAGES:
            self.stage_duration.labels(stage=stage)
        for component in components:
            for result in RESULTS:
                self.downstream_requests.labels(component=component, result=result)
        for stage in DEGRADED_STAGES:
            self.degraded_responses.labels(stage=stage)

    def record_outcome(self, outcome: SearchOutcome, seconds: float) -> None:
        self.requests.labels(variant=outcome.variant, code=grpc.StatusCode.OK.name).inc()
        self.request_duration.labels(variant=outcome.variant).observe(seconds)
        failed: dict[tuple[str, str], str] = {
            (d.stage, d.component): d.reason for d in outcome.coverage.degradations
        }
        for timing in outcome.timings:
            if timing.stage not in STAGES:
                continue  # a downstream's own stages (embed, search, inference) stay in its metrics
            self.stage_duration.labels(stage=timing.stage).observe(timing.seconds)
            if timing.component and timing.stage in DEGRADED_STAGES:
                result = failed.get((timing.stage, timing.component), "ok")
                self.downstream_requests.labels(component=timing.component, result=result).inc()
        for stage in {d.stage for d in outcome.coverage.degradations}:
            self.degraded_responses.labels(stage=stage).inc()

    def record_error(self, variant: str | None, code: grpc.StatusCode) -> None:
        self.requests.labels(variant=variant or UNRESOLVED, code=code.name).inc()
