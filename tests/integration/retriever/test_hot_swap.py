"""Hot swap under load: a retriever process switches index versions on SIGHUP with no failed request.

The process serves `<root>/current/shard-0`, where `current` is a symlink to a version directory. The test
builds v1 and v2, keeps eight concurrent clients querying, repoints `current` atomically to v2 and sends
SIGHUP: answers switch from v1 to v2 and none fails. A corrupt version is refused and v2 keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest
from search.v1 import retriever_pb2, retriever_pb2_grpc

from operations.processes import ServiceStack
from retriever_service.build_index import build_index

pytestmark = pytest.mark.slow


def _point(link: Path, version_dir: Path) -> None:
    """Repoints a symlink in one step (a new link renamed over the old)."""
    scratch = link.with_name(f".{link.name}.tmp")
    scratch.unlink(missing_ok=True)
    scratch.symlink_to(version_dir.name)
    os.replace(scratch, link)


def _version(index: Path) -> str:
    return str(json.loads((index / "shard-0" / "manifest.json").read_text())["version"])


async def _load_until(address: str, stop: asyncio.Event, seen: list[list[str]], failures: list[str]) -> None:
    async def client(mine: list[str]) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            while not stop.is_set():
                try:
                    reply = await stub.Retrieve(
                        retriever_pb2.RetrieveRequest(query="compress a file", top_k=5), timeout=10
                    )
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc.code().name)
                else:
                    mine.append(reply.shard.index.version)

    await asyncio.gather(*(client(mine) for mine in seen))


async def _wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_sighup_swaps_the_index_version_under_load(corpus_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "bm25"
    v1 = build_index(corpus_path, root / "a", kind="bm25")
    await asyncio.sleep(1.1)  # version labels have one-second resolution
    v2 = build_index(corpus_path, root / "b", kind="bm25")
    broken = build_index(corpus_path, root / "c", kind="bm25", overwrite=True)
    (broken / "shard-0" / "docs.jsonl").write_text("")  # checksum mismatch: must be refused at load
    old, new = _version(v1), _version(v2)
    assert old != new
    current = root / "current"
    _point(current, v1)
    argv = [sys.executable, "-m", "retriever_service", "--index", str(current / "shard-0"), "--threads", "1"]
    with ServiceStack(tmp_path / "run") as stack:
        service = stack.start("bm25", argv)
        stop = asyncio.Event()
        per_client: list[list[str]] = [[] for _ in range(8)]
        failures: list[str] = []

        def answers() -> list[str]:
            return [version for versions in per_client for version in versions]

        load = asyncio.create_task(_load_until(service.address, stop, per_client, failures))
        try:
            await _wait_for(lambda: all(len(versions) >= 5 for versions in per_client))
            _point(current, v2)
            service.process.send_signal(signal.SIGHUP)
            await _wait_for(lambda: all(new in versions for versions in per_client))
            _point(current, broken)
            service.process.send_signal(signal.SIGHUP)
            await _wait_for(lambda: "index reload refused" in (tmp_path / "run" / "bm25.log").read_text())
            settled = len(answers())
            await _wait_for(lambda: len(answers()) >= settled + 50)
        finally:
            stop.set()
            await load
        assert failures == []
        assert set(answers()) == {old, new}  # the refused version never answered
        for versions in per_client:
            assert versions[0] == old
            # A client's next call starts after its last answer: once it got v2, the swap had happened,
            # so every later call of that client is answered by v2 (no timing assumption).
            assert old not in versions[versions.index(new) :]
        assert service.running
