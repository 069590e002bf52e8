"""The retriever over real gRPC on loopback: Retrieve, GetShardInfo, bad input, health, reflection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from search.v1 import retriever_pb2, retriever_pb2_grpc

from model_runtimes.bi_encoder import BiEncoder
from retriever_service.bootstrap import load_shard_retriever
from retriever_service.config import Settings
from retriever_service.server import SERVICE_NAME, build_server, create_server


@pytest.fixture
async def dense_stub(dense_server: int) -> AsyncIterator[retriever_pb2_grpc.RetrieverServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{dense_server}") as channel:
        yield retriever_pb2_grpc.RetrieverServiceStub(channel)


async def test_retrieve_returns_best_first_with_timings(
    dense_stub: retriever_pb2_grpc.RetrieverServiceStub, encoder: BiEncoder
) -> None:
    reply = await dense_stub.Retrieve(
        retriever_pb2.RetrieveRequest(query="vitamin c and scurvy", top_k=5), timeout=30
    )
    assert len(reply.candidates) == 5
    assert reply.candidates[0].document.title.startswith("vitamin")
    scores = [c.score for c in reply.candidates]
    assert scores == sorted(scores, reverse=True)
    assert {t.stage for t in reply.timings} == {"embed", "search"}
    assert all(t.component == "dense/shard-0" for t in reply.timings)
    assert reply.shard.kind == retriever_pb2.RETRIEVER_KIND_DENSE
    assert reply.shard.encoder == encoder.identity


async def test_concurrent_requests_all_succeed(dense_stub: retriever_pb2_grpc.RetrieverServiceStub) -> None:
    queries = [f"{topic} question {i}" for i in range(4) for topic in ("vitamin", "heart", "sleep", "virus")]
    replies = await asyncio.gather(
        *(dense_stub.Retrieve(retriever_pb2.RetrieveRequest(query=q, top_k=3), timeout=60) for q in queries)
    )
    assert [len(r.candidates) for r in replies] == [3] * len(queries)
    for query, reply in zip(queries, replies, strict=True):
        assert reply.candidates[0].document.title.split()[0] == query.split()[0]


async def test_top_k_above_corpus_size_returns_every_document(
    dense_stub: retriever_pb2_grpc.RetrieverServiceStub,
) -> None:
    reply = await dense_stub.Retrieve(retriever_pb2.RetrieveRequest(query="heart", top_k=20), timeout=30)
    assert len(reply.candidates) == 20
    assert len({c.document.doc_id for c in reply.candidates}) == 20


async def test_get_shard_info(dense_stub: retriever_pb2_grpc.RetrieverServiceStub, dense_index: Path) -> None:
    info = await dense_stub.GetShardInfo(retriever_pb2.GetShardInfoRequest(), timeout=10)
    assert (info.shard_id, info.num_shards, info.num_documents) == (0, 1, 36)
    assert info.index.name == "tiny"
    assert info.index.component == "dense/shard-0"
    assert info.index.version.startswith("v")


@pytest.mark.parametrize(
    ("query", "top_k", "message"),
    [
        ("", 5, "query is empty or whitespace only"),
        ("  \n\t ", 5, "query is empty or whitespace only"),
        ("vitamin", 0, "top_k must be a positive integer, got 0"),
        ("vitamin", -4, "top_k must be a positive integer, got -4"),
        ("vitamin", 21, "top_k 21 exceeds this server's maximum of 20"),
        ("x" * 201, 5, "query is 201 characters long; the limit is 200"),
    ],
)
async def test_bad_input_is_invalid_argument(
    dense_stub: retriever_pb2_grpc.RetrieverServiceStub, query: str, top_k: int, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await dense_stub.Retrieve(retriever_pb2.RetrieveRequest(query=query, top_k=top_k), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == message


async def test_health_goes_serving_only_after_load_and_warmup(
    dense_index: Path, encoder: BiEncoder, server_settings: Callable[..., Settings]
) -> None:
    settings = server_settings(dense_index / "shard-0")
    built = build_server(settings)
    from search_common.grpc_server import set_serving

    await set_serving(built.health, [SERVICE_NAME], serving=False)
    await built.server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            for service in ("", SERVICE_NAME):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Retrieve(retriever_pb2.RetrieveRequest(query="vitamin", top_k=3), timeout=5)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "loading" in (exc.value.details() or "")

            await built.mark_ready([load_shard_retriever(settings.index, encoder=encoder, max_top_k=20)])
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            ok = await stub.Retrieve(retriever_pb2.RetrieveRequest(query="vitamin", top_k=3), timeout=30)
            assert len(ok.candidates) == 3
    finally:
        await built.server.stop(None)


async def test_reflection_lists_the_services(dense_server: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{dense_server}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = set()
        async for response in responses:
            names |= {s.name for s in response.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_bm25_shard_over_grpc(bm25_index: Path, server_settings: Callable[..., Settings]) -> None:
    settings = server_settings(bm25_index / "shard-0")
    retriever = load_shard_retriever(settings.index, max_top_k=settings.max_top_k)
    server, port = create_server(settings, retriever)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            reply = await stub.Retrieve(
                retriever_pb2.RetrieveRequest(query="influenza vaccine", top_k=4), timeout=10
            )
            assert reply.candidates and reply.candidates[0].document.title.startswith("virus")
            assert reply.shard.kind == retriever_pb2.RETRIEVER_KIND_BM25
            assert reply.shard.encoder == ""
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Retrieve(retriever_pb2.RetrieveRequest(query=" ", top_k=4), timeout=10)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(None)
