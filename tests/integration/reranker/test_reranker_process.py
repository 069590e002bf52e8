"""`python -m reranker_service` as a real process: port file once SERVING, answers, clean SIGTERM stop; and
with --wait-for-model, serving before its model exists and loading it when it appears."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import grpc
import pytest
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from operations.processes import ServiceStack, check_serving, wait_for_serving
from operations.redis_server import RedisServer
from reranker_service.server import STATUS_FILE


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


def test_a_reranker_waiting_for_its_model_says_why_then_serves_the_first_one_to_appear(
    artifact_v1: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / STATUS_FILE).write_text("training the default cross-encoder: step 3/10\n")
    argv = [sys.executable, "-m", "reranker_service", "--artifact-dir", str(root), "--wait-for-model"]
    request = reranker_pb2.RerankRequest(
        query="process test", documents=[common_pb2.Document(doc_id="a", text="some text")]
    )
    with ServiceStack(tmp_path / "run") as stack:
        service = stack.spawn("reranker", [*argv, "--intra-op-threads", "1"])
        service.wait_ready(60, serving=False)
        with grpc.insecure_channel(service.address) as channel:
            stub = reranker_pb2_grpc.RerankerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as waiting:
                stub.Rerank(request, timeout=10)
            assert waiting.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "no model yet" in waiting.value.details() and "step 3/10" in waiting.value.details()
            assert not check_serving(service.address, "search.v1.RerankerService")
            # A broken version is refused and reported; the next one is loaded. Each is published as a build
            # would: complete under a hidden name, then renamed into place.
            shutil.copytree(artifact_v1, root / ".v0.partial")
            with (root / ".v0.partial" / "tokenizer.json").open("a") as handle:
                handle.write(" ")
            (root / ".v0.partial").rename(root / "v0")
            deadline = time.monotonic() + 60
            while "v0 refused" not in (details := _unavailable_details(stub, request)):
                assert time.monotonic() < deadline, details
                time.sleep(0.5)
            assert "checksum mismatch" in details
            shutil.copytree(artifact_v1, root / ".v1.partial")
            (root / ".v1.partial").rename(root / "v1")
            wait_for_serving(service.address, 60, "search.v1.RerankerService")
            reply = stub.Rerank(request, timeout=30)
            assert len(reply.scores) == 1 and reply.model.version == "v1"
        assert service.stop() == 0


def _unavailable_details(
    stub: reranker_pb2_grpc.RerankerServiceStub, request: reranker_pb2.RerankRequest
) -> str:
    with pytest.raises(grpc.RpcError) as refused:
        stub.Rerank(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    return str(refused.value.details())
