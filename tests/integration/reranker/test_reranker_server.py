"""The reranker gRPC server on loopback: health, reflection, answers, status codes, a Redis outage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from operations.redis_server import RedisServer
from operations.tritonserver import TritonServer
from reranker_service.bootstrap import build_core
from reranker_service.config import Settings
from reranker_service.scoring import RerankCore
from reranker_service.server import SERVICE_NAME, build_server

DOCS = [
    common_pb2.Document(doc_id=f"d{i}", title="", text=f"text number {i} about aspirin") for i in range(5)
]


@dataclass
class Running:
    stub: reranker_pb2_grpc.RerankerServiceStub
    channel: grpc.aio.Channel
    core: RerankCore


async def _serve(settings: Settings) -> AsyncIterator[Running]:
    built = build_server(settings)
    await built.server.start()
    core = build_core(settings)
    await built.mark_ready(core)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{built.port}")
    try:
        yield Running(reranker_pb2_grpc.RerankerServiceStub(channel), channel, core)
    finally:
        await channel.close()
        await built.server.stop(0)
        await core.close()


@pytest.fixture(params=["onnx", "torch"])
async def embedded_server(artifact_v1: Path, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """The reranker scoring in process, on each engine."""
    settings = Settings(
        backend=request.param, artifact_dir=artifact_v1, cache="lru", max_documents=8, intra_op_threads=1
    )
    async for running in _serve(settings):
        assert running.core.scorer.engine == request.param
        yield running


async def test_health_is_serving_and_reflection_lists_the_service(embedded_server: Running) -> None:
    health = health_pb2_grpc.HealthStub(embedded_server.channel)
    for name in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(embedded_server.channel)
    async for reply in reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    ):
        assert SERVICE_NAME in {s.name for s in reply.list_services_response.service}


async def test_rerank_answers_in_order_and_hits_the_cache(embedded_server: Running) -> None:
    request = reranker_pb2.RerankRequest(query="aspirin", documents=DOCS, use_cache=True)
    first = await embedded_server.stub.Rerank(request, timeout=30)
    second = await embedded_server.stub.Rerank(request, timeout=30)
    assert len(first.scores) == len(DOCS)
    assert (first.model.name, first.model.version, first.model.component) == (
        "cross-encoder-minilm",
        "v1",
        "reranker",
    )
    assert first.cache_hits == 0 and second.cache_hits == len(DOCS)
    assert list(second.scores) == list(first.scores)
    assert {t.stage for t in first.timings} == {"cache", "inference"}
    uncached = await embedded_server.stub.Rerank(
        reranker_pb2.RerankRequest(query="aspirin", documents=DOCS, use_cache=False), timeout=30
    )
    assert uncached.cache_hits == 0


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            reranker_pb2.RerankRequest(query="", documents=DOCS),
            grpc.StatusCode.INVALID_ARGUMENT,
            "query must not be empty",
        ),
        (
            reranker_pb2.RerankRequest(query="q", documents=DOCS * 2),
            grpc.StatusCode.INVALID_ARGUMENT,
            "10 documents in one request; the limit is 8",
        ),
        (
            reranker_pb2.RerankRequest(query="q"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "documents must not be empty",
        ),
        (
            reranker_pb2.RerankRequest(query="q", documents=[common_pb2.Document(doc_id="x")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "documents[0] has neither title nor text",
        ),
        (
            reranker_pb2.RerankRequest(query="q", documents=DOCS, max_sequence_length=4096),
            grpc.StatusCode.INVALID_ARGUMENT,
            "between 8 and 128, got 4096",
        ),
        (
            reranker_pb2.RerankRequest(query="q", documents=DOCS, model="bert-large"),
            grpc.StatusCode.NOT_FOUND,
            "unknown model 'bert-large'",
        ),
    ],
)
async def test_bad_requests_get_a_helpful_status(
    embedded_server: Running, request_: reranker_pb2.RerankRequest, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embedded_server.stub.Rerank(request_, timeout=30)
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")


async def test_redis_killed_mid_test_the_service_still_answers(artifact_v1: Path) -> None:
    with RedisServer() as redis_server:
        settings = Settings(
            artifact_dir=artifact_v1, cache="redis", redis_url=redis_server.url, intra_op_threads=1
        )
        async for running in _serve(settings):
            request = reranker_pb2.RerankRequest(query="aspirin", documents=DOCS, use_cache=True)
            before = await running.stub.Rerank(request, timeout=30)
            assert (await running.stub.Rerank(request, timeout=30)).cache_hits == len(DOCS)
            redis_server.kill()
            during = await running.stub.Rerank(request, timeout=30)
            assert during.cache_hits == 0 and during.cache_bypassed and not before.cache_bypassed
            assert list(during.scores) == pytest.approx(list(before.scores), abs=1e-6)
            assert running.core.cache_stats().errors >= 1


async def test_the_service_over_triton_with_redis(
    triton_server: TritonServer, redis_server: RedisServer
) -> None:
    settings = Settings(
        backend="triton", triton_url=triton_server.grpc_url, cache="redis", redis_url=redis_server.url
    )
    async for running in _serve(settings):
        request = reranker_pb2.RerankRequest(query="triton path", documents=DOCS, use_cache=True)
        first = await running.stub.Rerank(request, timeout=30)
        second = await running.stub.Rerank(request, timeout=30)
        assert (first.model.name, first.model.version) == ("cross-encoder-minilm", "v1")
        assert second.cache_hits == len(DOCS) and list(second.scores) == list(first.scores)
