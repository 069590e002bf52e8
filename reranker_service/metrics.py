"""The reranker's Prometheus metrics: one place, built against a registry (tests pass a fresh one).

Names follow `search_reranker_*` with base units; label values come from small fixed sets, and every known
combination is created at zero up front.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

CACHE_RESULTS = ("hit", "miss")
STAGES = ("cache", "inference")
# The reranker's stages are short: the low end matters more than the defaults' 5 ms floor.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
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
            "Time per request stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        for result in CACHE_RESULTS:
            self.cache_lookups.labels(result=result)
        for stage in STAGES:
            self.stage_duration.labels(stage=stage)
