"""What the stored-vector reranker tests share: a small corpus file, its token stores built by the CLI, and
the reranker's gRPC server on loopback over them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from reranker_service.bootstrap import build_core
from reranker_service.config import BackendKind, Settings
from reranker_service.server import build_server
from retriever_service.build_index import main as build_main


def write_corpus(path: Path, rows: Sequence[tuple[str, str, str]]) -> Path:
    """A BEIR corpus.jsonl of (id, title, text) rows."""
    path.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in rows))
    return path


def build_store(corpus: Path, out: Path, kind: str, artifact: Path, *flags: str) -> Path:
    """Two shards of `kind` vectors by `artifact`, through `search-build-index` (with `flags` added)."""
    argv = ["--corpus", str(corpus), "--out", str(out), "--kind", kind, "--shards", "2", *flags]
    assert build_main([*argv, "--encoder", str(artifact), "--batch-size", "2"]) == 0
    return out


def served_settings(backend: BackendKind, artifact: Path, token_store: Path) -> Settings:
    """A small in-process reranker of a stored-vector `backend` over `token_store`, with an LRU cache."""
    return Settings(
        backend=backend,
        artifact_dir=artifact,
        token_store=token_store,
        cache="lru",
        max_documents=8,
        intra_op_threads=1,
    )


async def assert_reranks_over_store(
    stub: reranker_pb2_grpc.RerankerServiceStub,
    query: str,
    rows: Sequence[tuple[str, str, str]],
    *,
    model: tuple[str, str],
    expected: npt.NDArray[np.floating],
    atol: float,
) -> None:
    """Served as the runtime scores in process (within `atol`), by `model` (name, version), cached on the
    second call; a blank query is INVALID_ARGUMENT."""
    documents = [common_pb2.Document(doc_id=i, title=t, text=x) for i, t, x in rows]
    request = reranker_pb2.RerankRequest(query=query, documents=documents, use_cache=True)
    first = await stub.Rerank(request, timeout=30)
    second = await stub.Rerank(request, timeout=30)
    assert (first.model.name, first.model.version) == model
    assert len(first.scores) == len(rows) and first.cache_hits == 0
    assert second.cache_hits == len(rows) and list(second.scores) == list(first.scores)
    np.testing.assert_allclose(first.scores, expected, atol=atol)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Rerank(reranker_pb2.RerankRequest(query=" ", documents=documents), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[grpc.aio.Channel]:
    """The reranker's server on a free loopback port, ready; a channel to it."""
    core = build_core(settings)
    built = build_server(settings)
    await built.server.start()
    await built.mark_ready(core)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{built.port}")
    try:
        yield channel
    finally:
        await channel.close()
        await built.server.stop(0)
        await core.close()
