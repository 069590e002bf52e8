"""The gateway's Prometheus metrics: one place, built against a registry (tests pass a fresh one).

Names follow `search_gateway_*` with base units; deploy/prometheus and deploy/grafana use these exact names
(renaming one is an API change: note it in deploy/prometheus/README.md). Label values come from small bounded
sets: `variant` from the variants file (plus "unresolved" for requests rejected before a variant was chosen),
`stage` embed|feedback|fanout|merge|rerank|fuse|end_to_end (embed: the gateway's own query embedding, with
--query-encoder; fuse: a learned-fusion model ordering the re-ranked head), `status`
ok|degraded|error|deadline, `code` a gRPC status name, `reason` deadline_exceeded|unavailable|error|
cache_bypassed, `component` a configured shard ("dense/shard-1") or "reranker" ("reranker/<model>" for each of
a variant's several rerankers), `slo` met|missed. Series for every known variant exist at zero up front.

Stage status: fanout is degraded when some shard failed; rerank is error or deadline when the reranker
failed (the response then keeps the first-stage order); end_to_end is ok or degraded for answered requests
and error or deadline for failed ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from gateway.overload import AnswerMargin, RerankAdmission
from gateway.pipeline import SearchOutcome
from gateway.variants import Variant

UNRESOLVED = "unresolved"
STAGES = ("embed", "feedback", "fanout", "merge", "rerank", "fuse", "end_to_end")
STATUSES = ("ok", "degraded", "error", "deadline")
# The statuses each stage can report (series created up front, so ratios over them have data from the start).
STAGE_STATUSES = {
    "embed": ("ok",),
    "feedback": ("ok",),
    "fanout": ("ok", "degraded"),
    "merge": ("ok",),
    "rerank": ("ok", "error", "deadline"),
    "fuse": ("ok",),
    "end_to_end": STATUSES,
}
RESULTS = ("ok", "deadline_exceeded", "unavailable", "error")
CODES = ("OK", "INVALID_ARGUMENT", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL")
DEGRADED_STAGES = ("retrieve", "rerank")
REASONS = ("deadline_exceeded", "unavailable", "error", "cache_bypassed", "overloaded")
RELOAD_RESULTS = ("ok", "error")
# Latency SLOs per request, end to end at the gateway: a first-stage-only variant answers within 500 ms,
# a reranked one (a CPU cross-encoder over up to 100 pairs) within 2.5 s. Both are bucket boundaries.
SLO_SECONDS = 0.5
RERANKED_SLO_SECONDS = 2.5
# Benchmarks on a 2-core CPU: hybrid end to end ~30-120 ms, fan-out 5-100 ms (query embedding dominates),
# merge < 1 ms, rerank 0.3-2 s for 30-100 pairs. Fine steps below 200 ms, the two SLOs as boundaries.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
)
_CODE_STATUS = {grpc.StatusCode.DEADLINE_EXCEEDED: "deadline"}


def slo_seconds(variant: Variant) -> float:
    """The end-to-end latency objective of a variant: longer when it reranks."""
    return RERANKED_SLO_SECONDS if variant.reranks else SLO_SECONDS


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.requests = Counter(
            "search_gateway_requests",
            "Search requests by served variant and gRPC status code.",
            ["variant", "code"],
            registry=registry,
        )
        self.stage_duration = Histogram(
            "search_gateway_stage_duration_seconds",
            "Time per gateway stage (fanout: all shards in parallel; end_to_end: the whole request).",
            ["stage", "variant", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.slo_requests = Counter(
            "search_gateway_slo_requests",
            "Requests judged against their variant's latency SLO (missed: failed or slower than the SLO).",
            ["variant", "slo"],
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
            "Degradations in answered requests, by variant, the stage that degraded and why.",
            ["variant", "stage", "reason"],
            registry=registry,
        )
        self.reranked_candidates = Counter(
            "search_gateway_reranked_candidates",
            "Candidates sent to the reranker and scored, by variant.",
            ["variant"],
            registry=registry,
        )
        self.variant_weight = Gauge(
            "search_gateway_variant_weight",
            "Assignment weight of each servable variant in the loaded variants file (0: by name only).",
            ["variant"],
            registry=registry,
        )
        self.variant_reloads = Counter(
            "search_gateway_variant_reloads",
            "Variants file reloads (SIGHUP or change on disk); error keeps the previous variants.",
            ["result"],
            registry=registry,
        )
        self.query_embedding_fallbacks = Counter(
            "search_gateway_query_embedding_fallbacks",
            "Dense shard calls resent by text because the shard refused the gateway's query embedding "
            "(built with another encoder than --query-encoder).",
            registry=registry,
        )
        # Read when scraped (`watch_overload`): the learned answering margin and the reranks in flight.
        self.answer_margin = Gauge(
            "search_gateway_answer_margin_seconds",
            "Seconds each request keeps back from its deadline to answer with what it has (learned from the "
            "gateway's event-loop lag, between --deadline-margin and --deadline-margin-cap).",
            registry=registry,
        )
        self.reranks_in_flight = Gauge(
            "search_gateway_reranks_in_flight",
            "Reranks sent and not yet answered; past --max-reranks-in-flight more are shed (overloaded).",
            registry=registry,
        )
        self._slo: dict[str, float] = {}

    def prepare(self, variants: Iterable[Variant], components: Iterable[str]) -> None:
        """Creates every known series at zero, so dashboards see them before the first event."""
        variants = list(variants)
        for variant in variants:
            self._slo[variant.name] = slo_seconds(variant)
        for name in (*(v.name for v in variants), UNRESOLVED):
            for code in CODES:
                self.requests.labels(variant=name, code=code)
            for stage, statuses in STAGE_STATUSES.items():
                for status in statuses:
                    self.stage_duration.labels(stage=stage, variant=name, status=status)
            for slo in ("met", "missed"):
                self.slo_requests.labels(variant=name, slo=slo)
            for stage in DEGRADED_STAGES:
                for reason in REASONS:
                    self.degraded_responses.labels(variant=name, stage=stage, reason=reason)
            self.reranked_candidates.labels(variant=name)
        for component in components:
            for result in RESULTS:
                self.downstream_requests.labels(component=component, result=result)
        for result in RELOAD_RESULTS:
            self.variant_reloads.labels(result=result)

    def set_variants(self, variants: Iterable[Variant], unservable: Iterable[str] = ()) -> None:
        """Publishes the loaded variants' weights (and their SLOs for later judgements)."""
        skip = set(unservable)
        variants = list(variants)
        self.variant_weight.clear()
        for variant in variants:
            self._slo[variant.name] = slo_seconds(variant)
            self.variant_weight.labels(variant=variant.name).set(
                0.0 if variant.name in skip else variant.weight
            )

    def record_outcome(self, outcome: SearchOutcome, seconds: float) -> None:
        variant = outcome.variant
        self.requests.labels(variant=variant, code=grpc.StatusCode.OK.name).inc()
        degradations = outcome.coverage.degradations
        failed: dict[tuple[str, str], str] = {(d.stage, d.component): d.reason for d in degradations}
        # A bypassed score cache is reported, but the rerank itself succeeded.
        rerank_failure = next(
            (d.reason for d in degradations if d.stage == "rerank" and d.reason != "cache_bypassed"), None
        )
        for timing in outcome.timings:
            # The gateway's own embed (a shard's has a component), its feedback search (gateway/prf.py) and
            # its learned fusion.
            if (timing.stage in ("embed", "feedback") and not timing.component) or timing.stage == "fuse":
                self.stage_duration.labels(stage=timing.stage, variant=variant, status="ok").observe(
                    timing.seconds
                )
            elif timing.stage in ("fanout", "merge"):
                status = "ok"
                if timing.stage == "fanout" and any(d.stage == "retrieve" for d in degradations):
                    status = "degraded"
                self.stage_duration.labels(stage=timing.stage, variant=variant, status=status).observe(
                    timing.seconds
                )
            if timing.component and timing.stage in DEGRADED_STAGES:
                result = failed.get((timing.stage, timing.component), "ok")
                self.downstream_requests.labels(component=timing.component, result=result).inc()
        # Several rerankers are asked at once: the stage took as long as the slowest.
        rerank_seconds = [t.seconds for t in outcome.timings if t.stage == "rerank" and t.component]
        if rerank_seconds:
            status = "ok"
            if rerank_failure is not None:
                status = "deadline" if rerank_failure == "deadline_exceeded" else "error"
            self.stage_duration.labels(stage="rerank", variant=variant, status=status).observe(
                max(rerank_seconds)
            )
        status = "degraded" if degradations else "ok"
        self.stage_duration.labels(stage="end_to_end", variant=variant, status=status).observe(seconds)
        for degradation in degradations:
            self.degraded_responses.labels(
                variant=variant, stage=degradation.stage, reason=degradation.reason
            ).inc()
        if outcome.embedding_fallbacks:
            self.query_embedding_fallbacks.inc(outcome.embedding_fallbacks)
        if outcome.reranked:
            self.reranked_candidates.labels(variant=variant).inc(outcome.reranked)
        met = seconds <= self._slo.get(variant, SLO_SECONDS)
        self.slo_requests.labels(variant=variant, slo="met" if met else "missed").inc()

    def record_error(self, variant: str | None, code: grpc.StatusCode, seconds: float) -> None:
        name = variant or UNRESOLVED
        self.requests.labels(variant=name, code=code.name).inc()
        if variant is None or code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
            return  # the caller's mistake: neither a latency sample nor an SLO miss
        status = _CODE_STATUS.get(code, "error")
        self.stage_duration.labels(stage="end_to_end", variant=name, status=status).observe(seconds)
        self.slo_requests.labels(variant=name, slo="missed").inc()

    def watch_overload(self, margin: AnswerMargin, admission: RerankAdmission | None) -> None:
        """Publishes the pipeline's learned margin and its reranks in flight, read at each scrape."""
        self.answer_margin.set_function(lambda: margin.seconds)
        if admission is not None:
            self.reranks_in_flight.set_function(lambda: admission.in_flight)

    def record_reload(self, ok: bool) -> None:
        self.variant_reloads.labels(result="ok" if ok else "error").inc()
