"""Retriever metrics over a real gRPC server (fake shard): stages by kind, bounded variants, shard info."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from search.v1 import retriever_pb2, retriever_pb2_grpc

from retriever_service.config import Settings
from retriever_service.metrics import RetrieverMetrics, stage_seconds
from retriever_service.server import create_server
from search_common.documents import Document, ShardDescription
from search_common.variant_label import VARIANT_METADATA_KEY
from tests.fakes import FakeRetriever


def test_stage_seconds_by_kind() -> None:
    assert stage_seconds("dense", {"embed": 0.01, "search": 0.001}) == {"embed": 0.01, "faiss_search": 0.001}
    assert stage_seconds("bm25", {"embed": 0.001, "search": 0.002}) == {"bm25": pytest.approx(0.003)}
    # Sent the query embedding: no embed sample at all, rather than a zero one.
    assert stage_seconds("dense", {"search": 0.001}) == {"faiss_search": 0.001}


async def test_retrieve_calls_are_measured_per_variant() -> None:
    registry = CollectorRegistry()
    metrics = RetrieverMetrics(registry)
    fake = FakeRetriever("bm25", 0, [(Document("d1", "t", "text"), 1.0)])
    metrics.set_shards(
        [ShardDescription("bm25", 0, 1, "corpus", "v7", num_documents=1)], variants=("hybrid",)
    )
    server, port = create_server(Settings(index=Path("unused"), port=0), fake, metrics)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            request = retriever_pb2.RetrieveRequest(query="q", top_k=1)
            await stub.Retrieve(request, metadata=((VARIANT_METADATA_KEY, "hybrid"),), timeout=5)
            await stub.Retrieve(request, metadata=((VARIANT_METADATA_KEY, "no spaces allowed"),), timeout=5)
            await stub.Retrieve(request, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Retrieve(retriever_pb2.RetrieveRequest(query="", top_k=1), timeout=5)
    finally:
        await server.stop(0)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    count = "search_retriever_stage_duration_seconds_count"
    assert value(count, stage="bm25", variant="hybrid", status="ok") == 1
    assert value(count, stage="bm25", variant="other", status="ok") == 1
    assert value(count, stage="bm25", variant="none", status="ok") == 1
    assert value("search_retriever_requests_total", variant="none", code="INVALID_ARGUMENT") == 1
    assert value("search_retriever_index_info", kind="bm25", index="corpus", version="v7", encoder="none",
                 shard="0", num_shards="1") == 1  # fmt: skip
    assert value("search_retriever_index_vectors", kind="bm25", shard="0") == 1
