"""The demo's first run: a real reranker process waits for its model while the default cross-encoder trains
in the background (a tiny budget on a few stdlib modules), says so to callers, then serves the model."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from operations.demo_reranker import CrossEncoderTraining, describe_gate
from operations.processes import ServiceStack, wait_for_serving
from search_common.artifacts import read_manifest
from tests.tiny_stdlib import TINY_BUDGET, TINY_RECIPE, write_tiny_corpus

SERVICE = "search.v1.RerankerService"


@pytest.fixture()
def tiny_corpus(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path)


@pytest.mark.slow
def test_the_reranker_answers_while_its_model_trains_then_serves_it(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    training = CrossEncoderTraining(
        tiny_corpus,
        tmp_path / "models",
        tmp_path / "serving",
        budget=TINY_BUDGET,
        recipe=TINY_RECIPE,
        require_gain=False,
    )
    training.serving_root.mkdir(parents=True)
    argv = [sys.executable, "-m", "reranker_service", "--artifact-dir", str(training.serving_root)]
    request = reranker_pb2.RerankRequest(
        query="split a string like a shell", documents=[common_pb2.Document(doc_id="a", text="shlex.split")]
    )
    with ServiceStack(tmp_path / "run") as stack:
        reranker = stack.spawn("reranker", [*argv, "--wait-for-model", "--intra-op-threads", "1"])
        reranker.wait_ready(60, serving=False)
        training.start()
        with grpc.insecure_channel(reranker.address) as channel:
            stub = reranker_pb2_grpc.RerankerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as waiting:
                stub.Rerank(request, timeout=10)
            assert waiting.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "training the default cross-encoder" in waiting.value.details()
            assert training.wait(600), "training did not end"
            assert training.error is None and training.artifact is not None
            wait_for_serving(reranker.address, 60, SERVICE)
            reply = stub.Rerank(request, timeout=30)
            manifest = read_manifest(training.artifact)
            assert reply.model.version == manifest["version"] and len(reply.scores) == 1
    assert "held-out nDCG@10" in describe_gate(manifest)
