"""Model hot swap under load: the reranker process moves from artifact v1 to v2 on SIGHUP, failing nothing.

`--artifact-dir` names an artifact root; v2 appears in it by an atomic rename (as an export does), SIGHUP
makes the process load and warm v2 beside v1 and swap it in. Four concurrent clients see the answers'
model version move from v1 to v2 with no failed request; a corrupt v3 is refused and v2 keeps serving.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from operations.processes import ServiceStack

pytestmark = pytest.mark.slow
DOCS = [common_pb2.Document(doc_id=f"d{i}", text=f"aspirin and fever, note {i}") for i in range(4)]


async def _wait_for(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _publish(source: Path, root: Path, version: str) -> None:
    scratch = root / f".tmp-{version}"
    shutil.copytree(source, scratch)
    scratch.rename(root / version)


async def test_sighup_swaps_the_model_version_under_load(
    artifact_v1: Path, artifact_v2: Path, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    _publish(artifact_v1, root, "v1")
    argv = [sys.executable, "-m", "reranker_service", "--artifact-dir", str(root), "--cache", "lru",
            "--intra-op-threads", "1", "--grace-seconds", "1"]  # fmt: skip
    with ServiceStack(tmp_path / "run") as stack:
        service = stack.start("reranker", argv, timeout=120)
        seen: list[str] = []
        per_client: list[list[str]] = [[] for _ in range(4)]
        failures: list[str] = []
        stop = asyncio.Event()

        async def client(mine: list[str]) -> None:
            async with grpc.aio.insecure_channel(service.address) as channel:
                stub = reranker_pb2_grpc.RerankerServiceStub(channel)
                request = reranker_pb2.RerankRequest(query="aspirin", documents=DOCS, use_cache=False)
                while not stop.is_set():
                    try:
                        reply = await stub.Rerank(request, timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        failures.append(exc.code().name)
                    else:
                        seen.append(reply.model.version)
                        mine.append(reply.model.version)

        load = asyncio.gather(*(client(mine) for mine in per_client))
        log = tmp_path / "run" / "reranker.log"
        try:
            await _wait_for(lambda: len(seen) >= 20)
            _publish(artifact_v2, root, "v2")
            service.process.send_signal(signal.SIGHUP)
            await _wait_for(lambda: seen.count("v2") >= 20)
            shutil.copytree(artifact_v2, root / "v3")
            (root / "v3" / "model.onnx").write_bytes(b"not a model")  # checksum mismatch
            service.process.send_signal(signal.SIGHUP)
            await _wait_for(lambda: "model reload refused" in log.read_text())
            settled = len(seen)
            await _wait_for(lambda: len(seen) >= settled + 20)
        finally:
            stop.set()
            await load
        assert failures == []
        assert seen[0] == "v1" and set(seen) == {"v1", "v2"}  # the refused v3 never answered
        for versions in per_client:
            # A client's next call starts after its last answer: once it got v2, the swap had happened,
            # so every later call of that client is answered by v2 (no timing assumption).
            assert "v1" not in versions[versions.index("v2") :]
        assert service.running
