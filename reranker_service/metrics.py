"""The reranker's Prometheus metrics: one place, built against a registry (tests pass a fresh one).

Names follow `search_reranker_*` with base units; deploy/prometheus and deploy/grafana use these exact names.
Labels: `stage` cache_lookup|inference, `variant` the caller's `x-search-variant` bounded by
`search_common.variant_label.VariantLabels`, `status` ok|error|deadline, `result` hit|miss|error (error: the
lookup was bypassed because the cache failed; for token stores hit|miss, a miss being a document the
late-interaction backend had to encode at request time), `code` a gRPC status name. Series for the known
label values exist at zero up front.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, Info

from search_common.variant_label import NO_VARIANT

CACHE_RESULTS = ("hit", "miss", "error")
STAGES = ("cache_lookup", "inference")
CODES = ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")
# Cache lookups take 0.1-5 ms (LRU in-process, Redis on loopback); cross-encoder inference on CPU takes
# 0.05-2 s for 10-100 pairs (int8 ONNX, length 256). 0.5 s and 2.5 s (the gateway's SLOs) are boundaries.
STAGE_BUCKETS = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
)
PAIR_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class RerankerMetrics:
    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.cache_lookups = Counter(
            "search_reranker_cache_lookups",
            "Score-cache lookups by result (one per document of a cached request).",
            ["result"],
            registry=registry,
        )
        self.cache_bypasses = Counter(
            "search_reranker_cache_bypasses",
            "Score-cache reads or writes skipped because the cache failed or was unreachable.",
            registry=registry,
        )
        self.batch_pairs = Histogram(
            "search_reranker_batch_pairs",
            "Pairs sent to the scorer per request (the cache misses).",
            buckets=PAIR_BUCKETS,
            registry=registry,
        )
        self.stage_duration = Histogram(
            "search_reranker_stage_duration_seconds",
            "Time per reranker stage of one request (cache_lookup: the read; inference: scoring the misses).",
            ["stage", "variant", "status"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "search_reranker_requests",
            "Rerank calls by the caller's variant and gRPC status code.",
            ["variant", "code"],
            registry=registry,
        )
        self.token_store_lookups = Counter(
            "search_reranker_token_store_lookups",
            "Late interaction: documents found in the token store (hit) or encoded at request time (miss).",
            ["result"],
            registry=registry,
        )
        self.model_info = Info(
            "search_reranker_model",
            "The model this reranker serves (backend: its engine, late-interaction for ColBERT).",
            registry=registry,
        )
        for result in CACHE_RESULTS:
            self.cache_lookups.labels(result=result)
        for result in ("hit", "miss"):
            self.token_store_lookups.labels(result=result)
        self.prepare_variants(())

    def prepare_variants(self, variants: Iterable[str]) -> None:
        for variant in (NO_VARIANT, *variants):
            for stage in STAGES:
                self.stage_duration.labels(stage=stage, variant=variant, status="ok")
            for code in CODES:
                self.requests.labels(variant=variant, code=code)

    def record_token_store_lookups(self, hits: int, misses: int) -> None:
        self.token_store_lookups.labels(result="hit").inc(hits)
        self.token_store_lookups.labels(result="miss").inc(misses)

    def set_model(self, model: str, version: str, backend: str) -> None:
        self.model_info.info({"model": model, "version": version, "backend": backend})

    def record_request(self, variant: str, code: grpc.StatusCode) -> None:
        self.requests.labels(variant=variant, code=code.name).inc()
