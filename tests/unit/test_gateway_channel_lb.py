"""The gateway's channels spread calls over every address a target resolves to (round_robin).

In Kubernetes a `dns:///<headless service>:<port>` target resolves to every ready pod; here an `ipv4:` target
listing two loopback servers stands in for it (same resolver output, no DNS needed). With gRPC's default
pick_first every call would go to the first address.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.clients import CHANNEL_OPTIONS, GrpcRetriever
from retriever_service.config import Settings as RetrieverSettings
from retriever_service.server import create_server
from search_common.documents import Document
from tests.fakes import FakeRetriever


def test_channel_options_select_round_robin() -> None:
    options = dict(CHANNEL_OPTIONS)
    config = json.loads(str(options["grpc.service_config"]))
    assert config == {"loadBalancingConfig": [{"round_robin": {}}]}


async def test_calls_spread_over_every_resolved_address() -> None:
    doc = Document("d1", "title", "text")
    fakes = [FakeRetriever("dense", 0, [(doc, 1.0)]) for _ in range(2)]
    servers = []
    ports = []
    for fake in fakes:
        server, port = create_server(RetrieverSettings(index=Path("unused"), port=0), fake)
        await server.start()
        servers.append(server)
        ports.append(port)
    client = GrpcRetriever("dense", 0, f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
    try:
        # round_robin only picks connected addresses: until the second connects, calls go to the first.
        for _ in range(200):
            await client.retrieve("query", 1, timeout=5.0)
            if all(fake.calls for fake in fakes):
                break
            await asyncio.sleep(0.01)
        for fake in fakes:
            fake.calls.clear()
        for _ in range(20):
            await client.retrieve("query", 1, timeout=5.0)
    finally:
        await client.close()
        for server in servers:
            await server.stop(0)
    # pick_first would give [20, 0]; round_robin alternates once both are connected.
    counts = [len(fake.calls) for fake in fakes]
    assert min(counts) >= 8, counts


async def test_dns_target_as_in_kubernetes_reaches_the_server() -> None:
    """The manifests' `dns:///<name>:<port>` target form resolves and serves (localhost stands in)."""
    doc = Document("d1", "title", "text")
    fake = FakeRetriever("bm25", 0, [(doc, 1.0)])
    server, port = create_server(RetrieverSettings(index=Path("unused"), port=0), fake)
    await server.start()
    client = GrpcRetriever("bm25", 0, f"dns:///localhost:{port}")
    try:
        result = await client.retrieve("query", 1, timeout=5.0)
    finally:
        await client.close()
        await server.stop(0)
    assert [c.document.doc_id for c in result.candidates] == ["d1"]
