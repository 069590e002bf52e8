"""Gateway metrics from pipeline outcomes: stage/variant/status histograms, degradations, SLO."""

from __future__ import annotations

from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from gateway.learned_fusion import load_learned_fusion
from gateway.metrics import GatewayMetrics
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import Variant
from search_common.documents import Document
from search_common.errors import Unavailable
from tests.fakes import FakeQueryEncoder, FakeReranker, FakeRetriever
from tests.fusion_support import HEAD, fusion_artifact

DENSE = Variant("dense", 1.0, "dense", retrieval_depth=5)
RERANKED = Variant("dense+ce", 0.0, "dense", retrieval_depth=5, reranker="ce", rerank_depth=3)
STAGE = "search_gateway_stage_duration_seconds_count"


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_outcome_and_errors_are_counted() -> None:
    docs = [(Document(f"d{i}", "", "text"), float(i)) for i in range(6)]
    healthy = FakeRetriever("dense", 0, docs[:3], num_shards=2)
    broken = FakeRetriever("dense", 1, docs[3:], num_shards=2, error=Unavailable("down"))
    outcome = await SearchPipeline({"dense": [healthy, broken]}).search(SearchQuery("q", 3, DENSE, 5, 0))

    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.prepare([DENSE], ["dense/shard-0", "dense/shard-1"])
    assert (
        registry.get_sample_value(
            "search_gateway_requests_total", {"variant": "unresolved", "code": "INVALID_ARGUMENT"}
        )
        == 0.0
    )
    assert registry.get_sample_value(STAGE, {"stage": "end_to_end", "variant": "dense", "status": "ok"}) == 0
    assert (
        registry.get_sample_value(
            "search_gateway_downstream_requests_total", {"component": "dense/shard-1", "result": "error"}
        )
        == 0.0
    )

    metrics.record_outcome(outcome, 0.01)
    metrics.record_error(None, grpc.StatusCode.INVALID_ARGUMENT, 0.001)
    metrics.record_error("dense", grpc.StatusCode.DEADLINE_EXCEEDED, 2.0)
    assert _value(registry, "search_gateway_requests_total", variant="dense", code="OK") == 1
    assert (
        _value(registry, "search_gateway_requests_total", variant="unresolved", code="INVALID_ARGUMENT") == 1
    )
    downstream = "search_gateway_downstream_requests_total"
    assert _value(registry, downstream, component="dense/shard-0", result="ok") == 1
    assert _value(registry, downstream, component="dense/shard-1", result="unavailable") == 1
    degraded = "search_gateway_degraded_responses_total"
    assert _value(registry, degraded, variant="dense", stage="retrieve", reason="unavailable") == 1
    assert _value(registry, STAGE, stage="fanout", variant="dense", status="degraded") == 1
    assert _value(registry, STAGE, stage="merge", variant="dense", status="ok") == 1
    assert _value(registry, STAGE, stage="end_to_end", variant="dense", status="degraded") == 1
    assert _value(registry, STAGE, stage="end_to_end", variant="dense", status="deadline") == 1
    # An invalid request is the caller's mistake: no latency sample, no SLO judgement.
    assert _value(registry, STAGE, stage="end_to_end", variant="unresolved", status="error") == 0
    assert _value(registry, "search_gateway_slo_requests_total", variant="dense", slo="met") == 1
    assert _value(registry, "search_gateway_slo_requests_total", variant="dense", slo="missed") == 1


async def test_reranked_candidates_and_the_longer_slo_of_reranked_variants() -> None:
    docs = [(Document(f"d{i}", "", "text"), float(i)) for i in range(6)]
    pipeline = SearchPipeline({"dense": [FakeRetriever("dense", 0, docs)]}, FakeReranker(lambda q, d: 1.0))
    outcome = await pipeline.search(SearchQuery("q", 3, RERANKED, 5, 3))
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.prepare([DENSE, RERANKED], [])
    metrics.record_outcome(outcome, 1.0)  # within the reranked SLO (2.5 s), beyond the plain one (0.5 s)
    assert _value(registry, "search_gateway_reranked_candidates_total", variant="dense+ce") == 3
    assert _value(registry, STAGE, stage="rerank", variant="dense+ce", status="ok") == 1
    assert _value(registry, "search_gateway_slo_requests_total", variant="dense+ce", slo="met") == 1


def test_variant_weights_and_reloads_are_published() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.prepare([DENSE, RERANKED], [])
    metrics.set_variants([DENSE, RERANKED], unservable=["dense+ce"])
    assert _value(registry, "search_gateway_variant_weight", variant="dense") == 1.0
    assert _value(registry, "search_gateway_variant_weight", variant="dense+ce") == 0.0
    metrics.record_reload(True)
    metrics.record_reload(False)
    assert _value(registry, "search_gateway_variant_reloads_total", result="ok") == 1
    assert _value(registry, "search_gateway_variant_reloads_total", result="error") == 1


async def test_gateway_embed_stage_and_fallbacks_are_counted() -> None:
    docs = [(Document(f"d{i}", "", "text"), float(i)) for i in range(6)]
    shards = [
        FakeRetriever("dense", 0, docs[:3], num_shards=2, encoder="enc@1"),
        FakeRetriever("dense", 1, docs[3:], num_shards=2, encoder="other@2"),
    ]
    pipeline = SearchPipeline({"dense": shards}, query_encoder=FakeQueryEncoder("enc@1"))
    outcome = await pipeline.search(SearchQuery("q", 3, DENSE, 5, 0))
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.prepare([DENSE], ["dense/shard-0", "dense/shard-1"])
    assert _value(registry, STAGE, stage="embed", variant="dense", status="ok") == 0
    assert _value(registry, "search_gateway_query_embedding_fallbacks_total") == 0
    metrics.record_outcome(outcome, 0.05)
    assert _value(registry, STAGE, stage="embed", variant="dense", status="ok") == 1
    assert _value(registry, "search_gateway_query_embedding_fallbacks_total") == 1


async def test_a_learned_fusion_is_timed_as_the_fuse_stage(tmp_path: Path) -> None:
    model = load_learned_fusion(fusion_artifact(tmp_path, name="lf", first_stage="dense"))
    learned = Variant(
        "dense+lf", 0.0, "dense", retrieval_depth=5, reranker="ce", rerank_depth=HEAD, fusion="learned",
        fusion_model="lf",
    )  # fmt: skip
    docs = [(Document(f"d{i}", "", "text"), float(i)) for i in range(6)]
    reranker = FakeReranker(lambda q, d: float(d.doc_id[1:]))
    shards = {"dense": [FakeRetriever("dense", 0, docs)]}
    pipeline = SearchPipeline(shards, reranker, fusion_models={"lf": model})
    outcome = await pipeline.search(SearchQuery("q", 5, learned, 5, HEAD))
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.prepare([DENSE, learned], [])
    assert _value(registry, STAGE, stage="fuse", variant="dense", status="ok") == 0  # series exist up front
    metrics.record_outcome(outcome, 0.1)
    assert _value(registry, STAGE, stage="fuse", variant="dense+lf", status="ok") == 1
    assert ("fusion", "lf") in {(v.component, v.name) for v in outcome.versions}
