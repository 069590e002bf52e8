"""A real stack in one event loop: retriever gRPC servers over real FAISS/BM25 shards and a gateway server.

The corpus is small and seeded (no dataset needed); indexes are built once per session under pytest's temp
folder with the packaged encoder, and every test starts its own servers on 127.0.0.1 port 0.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from search.v1 import search_service_pb2_grpc

from gateway.bootstrap import bootstrap
from gateway.config import Settings as GatewaySettings
from gateway.metrics import GatewayMetrics
from gateway.server import start_gateway
from model_runtimes.bi_encoder import BiEncoder
from retriever_service.bootstrap import load_index
from retriever_service.build_index import build_index
from retriever_service.config import Settings as RetrieverSettings
from retriever_service.server import create_server as create_retriever_server
from search_common.ports import QueryEncoder, Retriever

TOPICS = {
    "archive": "gzip tar zip compress decompress archive file bytes stream",
    "network": "socket http request url server client connection port protocol",
    "time": "date time timezone calendar iso format parse timestamp clock",
    "crypto": "hash sha256 digest checksum secure random token password key",
    "process": "subprocess command shell pipe output exit code signal child",
    "cli": "command line arguments parser options flags help usage argv",
}


def _synthetic_corpus(path: Path, num_docs: int = 90, seed: int = 13) -> None:
    rng = random.Random(seed)
    names = sorted(TOPICS)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(num_docs):
            topic = names[i % len(names)]
            words = TOPICS[topic].split()
            other = TOPICS[names[rng.randrange(len(names))]].split()
            text = " ".join(rng.choice(words) for _ in range(rng.randint(12, 30)))
            text += " " + " ".join(rng.choice(other) for _ in range(rng.randint(2, 6)))
            doc = {"_id": f"doc-{i:03d}", "title": f"{topic} note {i}", "text": text}
            handle.write(json.dumps(doc) + "\n")


@pytest.fixture(scope="session")
def encoder() -> BiEncoder:
    return BiEncoder.load()


@pytest.fixture(scope="session")
def indexes(tmp_path_factory: pytest.TempPathFactory, encoder: BiEncoder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gateway-indexes")
    corpus = root / "corpus.jsonl"
    _synthetic_corpus(corpus)
    return {
        "dense-1": build_index(corpus, root / "dense-1", kind="dense", num_shards=1, encoder=encoder),
        "dense-3": build_index(corpus, root / "dense-3", kind="dense", num_shards=3, encoder=encoder),
        "bm25-1": build_index(corpus, root / "bm25-1", kind="bm25", num_shards=1),
    }


@pytest.fixture(scope="session")
def shards(indexes: dict[str, Path], encoder: BiEncoder) -> dict[str, list[Retriever]]:
    """In-process shard adapters, loaded once and served by fresh gRPC servers in every test."""
    return {name: load_index(path, encoder=encoder) for name, path in indexes.items()}


@dataclass
class Stack:
    stub: search_service_pb2_grpc.SearchServiceStub
    retriever_servers: dict[str, list[grpc.aio.Server]] = field(default_factory=dict)
    settings: GatewaySettings | None = None


@contextlib.asynccontextmanager
async def running_stack(
    groups: Mapping[str, Sequence[Retriever]],
    shard_dirs: Mapping[str, Path],
    *,
    query_encoder: QueryEncoder | None = None,
    metrics: GatewayMetrics | None = None,
    **gateway_options: object,
) -> AsyncIterator[Stack]:
    """Serves each group's shards on their own retriever servers, then a gateway over them.

    `query_encoder` is the gateway's (what --query-encoder loads), `metrics` what it counts into.
    """
    started: list[grpc.aio.Server] = []
    servers: dict[str, list[grpc.aio.Server]] = {}
    addresses: dict[str, tuple[str, ...]] = {}
    try:
        for group, retrievers in groups.items():
            for i, retriever in enumerate(retrievers):
                shard_settings = RetrieverSettings(index=shard_dirs[group] / f"shard-{i}", port=0)
                server, port = create_retriever_server(shard_settings, retriever)
                await server.start()
                started.append(server)
                servers.setdefault(group, []).append(server)
                addresses[group] = (*addresses.get(group, ()), f"127.0.0.1:{port}")
        settings = GatewaySettings(retrievers=addresses, port=0, **gateway_options)  # type: ignore[arg-type]
        gateway = bootstrap(settings, query_encoder=query_encoder)
        bound = await start_gateway(settings, gateway, metrics)
        started.append(bound.server)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bound.port}") as channel:
                yield Stack(search_service_pb2_grpc.SearchServiceStub(channel), servers, settings)
        finally:
            await bound.server.stop(0)
            await gateway.close()
    finally:
        for server in reversed(started):
            await server.stop(0)


StackFactory = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


@pytest.fixture
def stack() -> StackFactory:
    """`async with stack(groups, shard_dirs, **gateway_settings) as s:` serves a fresh stack."""
    return running_stack
