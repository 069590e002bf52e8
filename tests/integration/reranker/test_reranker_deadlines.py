"""Work past its deadline is cancelled, not left running: a real reranker server on ONNX Runtime.

Requests of many documents arrive with deadlines far shorter than their scoring takes. Each answers
DEADLINE_EXCEEDED; queued scoring jobs are dropped before they start and a running one stops at its next
batch, so the scorer's in-flight count returns to zero instead of working through every expired request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from reranker_service.backends.embedded import EmbeddedScorer
from reranker_service.bootstrap import build_core
from reranker_service.config import Settings
from reranker_service.server import build_server

DOCS = [
    common_pb2.Document(doc_id=f"d{i}", text=f"document {i} about aspirin, fever and pain " * 12)
    for i in range(256)
]


async def test_expired_requests_stop_scoring_and_in_flight_returns_to_zero(artifact_v1: Path) -> None:
    settings = Settings(artifact_dir=artifact_v1, cache="none", intra_op_threads=1, max_documents=256)
    built = build_server(settings)
    await built.server.start()
    core = build_core(settings)
    await built.mark_ready(core)
    scorer = core.scorer
    assert isinstance(scorer, EmbeddedScorer)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            stub = reranker_pb2_grpc.RerankerServiceStub(channel)
            request = reranker_pb2.RerankRequest(query="aspirin", documents=DOCS, use_cache=False)
            calls = [stub.Rerank(request, timeout=0.05) for _ in range(6)]
            codes = []
            for call in calls:
                try:
                    await call
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
            assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
            assert set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK}
            for _ in range(300):  # the running job stops at its next batch; bounded wait, no timing claim
                if scorer.in_flight == 0:
                    break
                await asyncio.sleep(0.05)
            assert scorer.in_flight == 0
            # The server is not wedged: a request with time to spare is answered.
            small = reranker_pb2.RerankRequest(query="aspirin", documents=DOCS[:4], use_cache=False)
            reply = await stub.Rerank(small, timeout=30)
            assert len(reply.scores) == 4
    finally:
        await built.server.stop(0)
        await core.close()


async def test_a_cancelled_scoring_job_stops_at_its_next_batch(artifact_v1: Path) -> None:
    """The deterministic core of the above: cancel the caller once its job runs; the job stops early."""
    scorer = EmbeddedScorer.load(artifact_v1, intra_op_threads=1)
    try:
        texts = [f"document {i} about aspirin" for i in range(2048)]  # 64 batches of 32
        task = asyncio.create_task(scorer.score("aspirin", texts))
        for _ in range(6000):
            if scorer.in_flight == 1:
                break
            await asyncio.sleep(0.005)
        assert scorer.in_flight == 1, "the scoring job never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(6000):
            if scorer.in_flight == 0:
                break
            await asyncio.sleep(0.005)
        assert scorer.in_flight == 0
        assert scorer.abandoned == 1, "the cancelled job ran all its batches"
    finally:
        await scorer.close()
