"""The gateway over real retriever gRPC servers and real FAISS/BM25 shards, end to end on loopback."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from search.v1 import search_service_pb2

from gateway.bootstrap import bootstrap
from gateway.config import Settings
from gateway.server import SERVICE_NAME, mark_ready, open_gateway
from retriever_service.config import Settings as RetrieverSettings
from retriever_service.server import create_server as create_retriever_server
from search_common.ports import Retriever

StackFactory = Callable[..., AbstractAsyncContextManager[Any]]

QUERIES = [
    "how to compress a file with gzip",
    "parse command line arguments and flags",
    "sha256 checksum of a password",
    "http client connection to a server",
    "format a timestamp in iso format",
    "run a shell command and read its output",
]


def _ranking(response: search_service_pb2.SearchResponse) -> list[tuple[str, float]]:
    return [(hit.doc_id, hit.score) for hit in response.hits]


def _assert_same_ranking(one: list[tuple[str, float]], many: list[tuple[str, float]]) -> None:
    """Identical doc order, allowing reordering only among (float32-)tied scores."""
    assert len(one) == len(many)
    for (id_a, score_a), (id_b, score_b) in zip(one, many, strict=True):
        assert score_a == pytest.approx(score_b, abs=1e-5)
        if id_a != id_b:
            tied_a = {d for d, s in one if abs(s - score_a) <= 1e-5}
            assert id_b in tied_a, f"{id_b} at the place of {id_a} without a tie"


async def test_three_shards_rank_like_one_index(
    shards: dict[str, list[Retriever]], indexes: dict[str, Path], stack: StackFactory
) -> None:
    async with stack({"dense": shards["dense-1"]}, {"dense": indexes["dense-1"]}) as one:
        single = [
            await one.stub.Search(search_service_pb2.SearchRequest(query=q, top_k=20, variant="dense"))
            for q in QUERIES
        ]
    async with stack({"dense": shards["dense-3"]}, {"dense": indexes["dense-3"]}) as three:
        sharded = [
            await three.stub.Search(search_service_pb2.SearchRequest(query=q, top_k=20, variant="dense"))
            for q in QUERIES
        ]
    for a, b in zip(single, sharded, strict=True):
        _assert_same_ranking(_ranking(a), _ranking(b))
        assert b.metadata.coverage.shards_queried == b.metadata.coverage.shards_answered == 3
        assert not b.metadata.coverage.degraded
        assert {v.component for v in b.metadata.versions} == {f"dense/shard-{i}" for i in range(3)}


async def test_hybrid_response_metadata(
    shards: dict[str, list[Retriever]], indexes: dict[str, Path], stack: StackFactory
) -> None:
    groups = {"dense": shards["dense-3"], "bm25": shards["bm25-1"]}
    dirs = {"dense": indexes["dense-3"], "bm25": indexes["bm25-1"]}
    async with stack(groups, dirs) as running:
        response = await running.stub.Search(
            search_service_pb2.SearchRequest(query="gzip compress archive", top_k=5), timeout=10
        )
    assert response.metadata.variant == "hybrid"  # the packaged default
    assert [h.rank for h in response.hits] == [1, 2, 3, 4, 5]
    assert response.hits[0].title.startswith("archive")
    assert all(not h.HasField("rerank_score") for h in response.hits)
    assert response.metadata.coverage.shards_queried == 4
    stages = {(t.stage, t.component) for t in response.metadata.timings}
    assert {
        ("retrieve", "dense/shard-0"),
        ("retrieve", "bm25/shard-0"),
        ("merge", ""),
        ("total", ""),
    } <= stages


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"query": "", "top_k": 5}, "query must not be empty"),
        ({"query": "  \n\t ", "top_k": 5}, "query must not be empty"),
        ({"query": "gzip", "top_k": 0}, r"top_k must be within \[1, 100\], got 0"),
        ({"query": "gzip", "top_k": -3}, r"top_k must be within \[1, 100\], got -3"),
        ({"query": "gzip", "top_k": 101}, r"top_k must be within \[1, 100\], got 101"),
        ({"query": "g" * 2049, "top_k": 5}, "query is 2049 characters long; the limit is 2048"),
        ({"query": "gzip", "top_k": 5, "variant": "nope"}, "unknown variant 'nope'; known variants"),
        (
            {"query": "gzip", "top_k": 5, "variant": "hybrid100+ce"},
            "variant 'hybrid100\\+ce' needs a reranker, none configured",
        ),
        (
            {"query": "gzip", "top_k": 5, "overrides": {"retrieval_depth": 0}},
            r"overrides.retrieval_depth must be within \[1, 1000\], got 0",
        ),
        (
            {"query": "gzip", "top_k": 5, "overrides": {"retrieval_depth": 5000}},
            r"overrides.retrieval_depth must be within \[1, 1000\]",
        ),
        (
            {"query": "gzip", "top_k": 5, "overrides": {"rerank_depth": 300}},
            r"overrides.rerank_depth must be within \[0, 200\], got 300",
        ),
        (
            {"query": "gzip", "top_k": 5, "overrides": {"rerank_depth": 5}},
            "variant 'hybrid' has no reranker",
        ),
    ],
)
async def test_bad_input_is_invalid_argument(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    request_fields: dict[str, object],
    message: str,
) -> None:
    groups = {"dense": shards["dense-1"], "bm25": shards["bm25-1"]}
    dirs = {"dense": indexes["dense-1"], "bm25": indexes["bm25-1"]}
    async with stack(groups, dirs) as running:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await running.stub.Search(search_service_pb2.SearchRequest(**request_fields), timeout=10)  # type: ignore[arg-type]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() is not None
    assert re.search(message, info.value.details() or ""), info.value.details()


async def test_stopped_shard_gives_partial_degraded_answer(
    shards: dict[str, list[Retriever]], indexes: dict[str, Path], stack: StackFactory
) -> None:
    async with stack({"dense": shards["dense-3"]}, {"dense": indexes["dense-3"]}) as running:
        await running.retriever_servers["dense"][1].stop(0)
        response = await running.stub.Search(
            search_service_pb2.SearchRequest(query="gzip compress archive", top_k=10, variant="dense"),
            timeout=10,
        )
    coverage = response.metadata.coverage
    assert len(response.hits) == 10
    assert coverage.degraded
    assert (coverage.shards_queried, coverage.shards_answered) == (3, 2)
    (degradation,) = coverage.degradations
    assert degradation.stage == search_service_pb2.STAGE_RETRIEVE
    assert degradation.component == "dense/shard-1"
    assert degradation.reason == search_service_pb2.DEGRADATION_REASON_UNAVAILABLE
    assert "127.0.0.1" not in degradation.detail


async def test_every_shard_down_is_unavailable(
    shards: dict[str, list[Retriever]], indexes: dict[str, Path], stack: StackFactory
) -> None:
    async with stack({"dense": shards["dense-1"]}, {"dense": indexes["dense-1"]}) as running:
        await running.retriever_servers["dense"][0].stop(0)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await running.stub.Search(
                search_service_pb2.SearchRequest(query="gzip", top_k=3, variant="dense"), timeout=10
            )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no retriever answered" in (info.value.details() or "")


async def test_health_waits_for_every_group(
    shards: dict[str, list[Retriever]], indexes: dict[str, Path]
) -> None:
    shard_settings = RetrieverSettings(index=indexes["bm25-1"] / "shard-0", port=0)
    retriever_server, retriever_port = create_retriever_server(shard_settings, shards["bm25-1"][0])
    settings = Settings(retrievers={"bm25": (f"127.0.0.1:{retriever_port}",)}, startup_timeout_seconds=30)
    gateway = bootstrap(settings)
    bound = await open_gateway(settings, gateway)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bound.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICE_NAME):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            await retriever_server.start()  # the only BM25 shard comes up only now
            await mark_ready(settings, gateway, bound)
            for name in ("", SERVICE_NAME):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await bound.server.stop(0)
        await gateway.close()
        await retriever_server.stop(0)
