"""The retriever's Prometheus metrics: one place, built against a registry (tests pass a fresh one).

Names follow `search_retriever_*` with base units; deploy/prometheus and deploy/grafana use these exact
names. Labels: `stage` embed|faiss_search|bm25, `variant` the caller's `x-search-variant` bounded by
`search_common.variant_label.VariantLabels` (none, other, or one of at most 32 valid names), `status`
ok|error|deadline, `code` a gRPC status name. The served shards are labelled by `kind` and `shard` in the
index series only; a process serving several shards (`shard_group`) reports their requests together. A dense
shard reports embed (query encoding; absent when the caller sent the query embedding) and
faiss_search; a BM25 shard reports bm25 (tokenisation and scoring together).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info

from search_common.documents import RetrieverKind, ShardDescription
from search_common.variant_label import NO_VARIANT

STAGES_OF: Mapping[RetrieverKind, tuple[str, ...]] = {"dense": ("embed", "faiss_search"), "bm25": ("bm25",)}
STATUSES = ("ok", "error", "deadline")
CODES = ("OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL")
# Benchmarks on a 2-core CPU: query embedding 5-15 ms (up to ~100 ms under contention), FAISS Flat over
# 5k vectors < 1 ms, BM25 1-5 ms. A fine low end, and 0.5 s (the gateway's SLO) as a boundary.
STAGE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


def stage_seconds(kind: RetrieverKind, timings: Mapping[str, float]) -> dict[str, float]:
    """The adapters' timings ("embed", "search") as metric stages of a shard of `kind`.

    No "embed" timing (the caller sent the query embedding) means no embed sample, rather than a zero one.
    """
    if kind == "dense":
        stages = {"embed": timings["embed"]} if "embed" in timings else {}
        return {**stages, "faiss_search": timings.get("search", 0.0)}
    return {"bm25": sum(timings.values())}


class RetrieverMetrics:
    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.stage_duration = Histogram(
            "search_retriever_stage_duration_seconds",
            "Time per retriever stage of one Retrieve call (errors: the elapsed time, under the main stage).",
            ["stage", "variant", "status"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "search_retriever_requests",
            "Retrieve calls by the caller's variant and gRPC status code.",
            ["variant", "code"],
            registry=registry,
        )
        self.index_info = Info(
            "search_retriever_index",
            "Each index shard this process serves.",
            ["kind", "shard"],
            registry=registry,
        )
        self.index_vectors = Gauge(
            "search_retriever_index_vectors",
            "Documents (dense: vectors) in each served shard.",
            ["kind", "shard"],
            registry=registry,
        )

    def set_shards(self, shards: Sequence[ShardDescription], variants: tuple[str, ...] = ()) -> None:
        """Publishes the loaded shards and creates their series at zero for the given variants."""
        for shard in shards:
            labels = {"kind": shard.kind, "shard": str(shard.shard_id)}
            self.index_info.labels(**labels).info(
                {
                    "index": shard.index_name,
                    "version": shard.index_version,
                    "encoder": shard.encoder or "none",
                    "num_shards": str(shard.num_shards),
                }
            )
            self.index_vectors.labels(**labels).set(shard.num_documents)
        for variant in (NO_VARIANT, *variants):
            for stage in {stage for shard in shards for stage in STAGES_OF[shard.kind]}:
                self.stage_duration.labels(stage=stage, variant=variant, status="ok")
            for code in CODES:
                self.requests.labels(variant=variant, code=code)

    def record_result(self, kind: RetrieverKind, variant: str, timings: Mapping[str, float]) -> None:
        self.requests.labels(variant=variant, code=grpc.StatusCode.OK.name).inc()
        for stage, seconds in stage_seconds(kind, timings).items():
            self.stage_duration.labels(stage=stage, variant=variant, status="ok").observe(seconds)

    def record_error(
        self, kind: RetrieverKind | None, variant: str, code: grpc.StatusCode, seconds: float
    ) -> None:
        self.requests.labels(variant=variant, code=code.name).inc()
        if kind is None or code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            return  # not loaded yet, or a request to resend: no latency sample
        status = "deadline" if code == grpc.StatusCode.DEADLINE_EXCEEDED else "error"
        self.stage_duration.labels(stage=STAGES_OF[kind][-1], variant=variant, status=status).observe(seconds)
