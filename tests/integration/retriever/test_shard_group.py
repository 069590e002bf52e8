"""One retriever process serving every shard of a 3-shard dense index and a BM25 index, over real gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from search.v1 import retriever_pb2, retriever_pb2_grpc

from model_runtimes.bi_encoder import BiEncoder
from retriever_service.bootstrap import build_retrievers, load_index
from retriever_service.config import Settings
from retriever_service.server import build_server
from search_common.artifacts import ArtifactError

DENSE = retriever_pb2.RETRIEVER_KIND_DENSE
BM25 = retriever_pb2.RETRIEVER_KIND_BM25


@pytest.fixture
async def stub(
    dense_sharded_index: Path, bm25_index: Path, server_settings: Callable[..., Settings]
) -> AsyncIterator[retriever_pb2_grpc.RetrieverServiceStub]:
    settings = server_settings(dense_sharded_index, more_indexes=(bm25_index / "shard-0",))
    built = build_server(settings)
    await built.server.start()
    await built.mark_ready(build_retrievers(settings))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            yield retriever_pb2_grpc.RetrieverServiceStub(channel)
    finally:
        await built.server.stop(None)


async def test_the_shards_are_listed_by_kind(stub: retriever_pb2_grpc.RetrieverServiceStub) -> None:
    listed = await stub.ListShards(retriever_pb2.ListShardsRequest(), timeout=10)
    assert [(s.kind, s.shard_id, s.num_shards) for s in listed.shards] == [
        (BM25, 0, 1), (DENSE, 0, 3), (DENSE, 1, 3), (DENSE, 2, 3),
    ]  # fmt: skip
    dense = await stub.ListShards(retriever_pb2.ListShardsRequest(kind=DENSE), timeout=10)
    assert [s.shard_id for s in dense.shards] == [0, 1, 2]
    with pytest.raises(grpc.aio.AioRpcError) as one:
        await stub.GetShardInfo(retriever_pb2.GetShardInfoRequest(), timeout=10)
    assert one.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ListShards" in (one.value.details() or "")


async def test_one_call_answers_for_every_shard_of_a_kind_exactly(
    stub: retriever_pb2_grpc.RetrieverServiceStub, dense_index: Path, encoder: BiEncoder
) -> None:
    (whole,) = load_index(dense_index, encoder=encoder)  # the same corpus in one shard
    for query in ("vitamin c and scurvy", "memory and the cortex", "breast cancer chemotherapy"):
        reply = await stub.Retrieve(
            retriever_pb2.RetrieveRequest(query=query, top_k=10, kind=DENSE), timeout=30
        )
        expected = await whole.retrieve(query, 10)
        assert [c.document.doc_id for c in reply.candidates] == [
            c.document.doc_id for c in expected.candidates
        ]
        assert [(s.kind, s.shard_id) for s in reply.searched] == [(DENSE, 0), (DENSE, 1), (DENSE, 2)]
        assert {t.component for t in reply.timings} == {"dense/shards-0-2"}
    lexical = await stub.Retrieve(
        retriever_pb2.RetrieveRequest(query="insomnia", top_k=3, kind=BM25), timeout=30
    )
    assert [(s.kind, s.shard_id) for s in lexical.searched] == [(BM25, 0)]
    assert lexical.candidates[0].document.title.startswith("sleep")


async def test_a_request_names_the_kind_it_wants(stub: retriever_pb2_grpc.RetrieverServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unnamed:
        await stub.Retrieve(retriever_pb2.RetrieveRequest(query="vitamin", top_k=3), timeout=10)
    assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "set kind" in (unnamed.value.details() or "")


async def test_a_server_of_one_kind_refuses_another(
    dense_sharded_index: Path, server_settings: Callable[..., Settings]
) -> None:
    settings = server_settings(dense_sharded_index)
    built = build_server(settings)
    await built.server.start()
    await built.mark_ready(build_retrievers(settings))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            reply = await stub.Retrieve(retriever_pb2.RetrieveRequest(query="vitamin", top_k=3), timeout=30)
            assert len(reply.searched) == 3  # one kind served: no need to name it
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await stub.Retrieve(
                    retriever_pb2.RetrieveRequest(query="vitamin", top_k=3, kind=BM25), timeout=10
                )
            assert other.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "no bm25 shard" in (other.value.details() or "")
    finally:
        await built.server.stop(None)


def test_shards_of_two_versions_of_one_kind_are_refused(
    dense_index: Path, dense_sharded_index: Path, server_settings: Callable[..., Settings]
) -> None:
    settings = server_settings(dense_index / "shard-0", more_indexes=(dense_sharded_index / "shard-1",))
    with pytest.raises(ArtifactError, match="one process serves one version of one index of each kind"):
        build_retrievers(settings)
