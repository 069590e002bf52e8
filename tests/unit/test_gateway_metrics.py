"""Gateway metrics from pipeline outcomes: per-shard results, degradations, series created at zero."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import Variant
from search_common.documents import Document
from search_common.errors import Unavailable
from tests.fakes import FakeRetriever

DENSE = Variant("dense", 1.0, "dense", retrieval_depth=5)


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
    metrics.prepare(["dense"], ["dense/shard-0", "dense/shard-1"])
    assert (
        _value(registry, "search_gateway_requests_total", variant="unresolved", code="INVALID_ARGUMENT") == 0
    )
    assert (
        registry.get_sample_value(
            "search_gateway_downstream_requests_total", {"component": "dense/shard-1", "result": "error"}
        )
        == 0.0
    )

    metrics.record_outcome(outcome, 0.01)
    metrics.record_error(None, grpc.StatusCode.INVALID_ARGUMENT)
    assert _value(registry, "search_gateway_requests_total", variant="dense", code="OK") == 1
    assert (
        _value(registry, "search_gateway_requests_total", variant="unresolved", code="INVALID_ARGUMENT") == 1
    )
    downstream = "search_gateway_downstream_requests_total"
    assert _value(registry, downstream, component="dense/shard-0", result="ok") == 1
    assert _value(registry, downstream, component="dense/shard-1", result="unavailable") == 1
    assert _value(registry, "search_gateway_degraded_responses_total", stage="retrieve") == 1
    assert _value(registry, "search_gateway_stage_duration_seconds_count", stage="retrieve") == 2
    assert _value(registry, "search_gateway_stage_duration_seconds_count", stage="merge") == 1
    assert _value(registry, "search_gateway_request_duration_seconds_count", variant="dense") == 1
