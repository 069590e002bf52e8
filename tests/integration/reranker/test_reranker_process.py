"""`python -m reranker_service` as a real process: port file once SERVING, answers, clean SIGTERM stop."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from operations.processes import ServiceStack
from operations.redis_server import RedisServer


def test_the_reranker_process_serves_and_stops_cleanly(
    artifact_v1: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    argv = [
        sys.executable,
        "-m",
        "reranker_service",
        "--artifact-dir",
        str(artifact_v1),
        "--cache",
        "redis",
        "--redis-url",
        redis_server.url,
        "--intra-op-threads",
        "1",
    ]
    with ServiceStack(tmp_path) as stack:
        service = stack.start("reranker", argv, timeout=120)
        with grpc.insecure_channel(service.address) as channel:
            stub = reranker_pb2_grpc.RerankerServiceStub(channel)
            request = reranker_pb2.RerankRequest(
                query="process test",
                documents=[common_pb2.Document(doc_id="a", text="some text")],
                use_cache=True,
            )
            reply = stub.Rerank(request, timeout=30)
            assert len(reply.scores) == 1 and reply.model.version == "v1"
        assert service.stop() == 0
    assert "shutting down" in (tmp_path / "reranker.log").read_text()
