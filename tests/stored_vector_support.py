"""What the stored-vector reranker tests share: a small corpus file, its token stores built by the CLI, and
the reranker's gRPC server on loopback over them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from reranker_service.bootstrap import build_core
from reranker_service.config import Settings
from reranker_service.server import build_server
from retriever_service.build_index import main as build_main


def write_corpus(path: Path, rows: Sequence[tuple[str, str, str]]) -> Path:
    """A BEIR corpus.jsonl of (id, title, text) rows."""
    path.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in rows))
    return path


def build_store(corpus: Path, out: Path, kind: str, artifact: Path) -> Path:
    """Two shards of `kind` vectors by `artifact`, through `search-build-index`."""
    argv = ["--corpus", str(corpus), "--out", str(out), "--kind", kind, "--shards", "2"]
    assert build_main([*argv, "--encoder", str(artifact), "--batch-size", "2"]) == 0
    return out


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
