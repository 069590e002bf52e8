"""A caller's query embedding over real gRPC: used by dense shards, checked, ignored by BM25 shards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
from search.v1 import retriever_pb2, retriever_pb2_grpc

from model_runtimes.bi_encoder import BiEncoder
from retriever_service.bootstrap import load_shard_retriever
from retriever_service.config import Settings
from retriever_service.faiss_index import FaissRetriever, build_faiss_index
from retriever_service.server import create_server
from search_common.documents import Document, ShardDescription

QUERY = "vitamin c and scurvy"


@pytest.fixture
async def dense_stub(dense_server: int) -> AsyncIterator[retriever_pb2_grpc.RetrieverServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{dense_server}") as channel:
        yield retriever_pb2_grpc.RetrieverServiceStub(channel)


def _request(values: Sequence[float], encoder: str, query: str = QUERY) -> retriever_pb2.RetrieveRequest:
    return retriever_pb2.RetrieveRequest(
        query=query,
        top_k=5,
        query_embedding=retriever_pb2.QueryEmbedding(values=list(values), encoder=encoder),
    )


async def test_dense_shard_searches_with_the_given_embedding(
    dense_stub: retriever_pb2_grpc.RetrieverServiceStub, encoder: BiEncoder
) -> None:
    by_text = await dense_stub.Retrieve(retriever_pb2.RetrieveRequest(query=QUERY, top_k=5), timeout=30)
    vector = encoder.encode_queries([QUERY])[0]
    by_vector = await dense_stub.Retrieve(_request(vector.tolist(), encoder.identity), timeout=30)
    assert [c.document.doc_id for c in by_vector.candidates] == [
        c.document.doc_id for c in by_text.candidates
    ]
    assert [c.score for c in by_vector.candidates] == pytest.approx([c.score for c in by_text.candidates])
    # No embedding computed: no embed timing (not a zero one).
    assert {t.stage for t in by_vector.timings} == {"search"}
    # The vector wins over the text: the same vector under another query text finds the same documents.
    other_text = await dense_stub.Retrieve(
        _request(vector.tolist(), encoder.identity, query="insomnia"), timeout=30
    )
    assert [c.document.doc_id for c in other_text.candidates] == [
        c.document.doc_id for c in by_text.candidates
    ]


async def test_embedding_from_another_encoder_is_a_failed_precondition(
    dense_stub: retriever_pb2_grpc.RetrieverServiceStub, encoder: BiEncoder
) -> None:
    vector = encoder.encode_queries([QUERY])[0].tolist()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await dense_stub.Retrieve(_request(vector, "other-encoder@0123456789ab"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = caught.value.details() or ""
    assert "other-encoder@0123456789ab" in details and encoder.identity in details


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (lambda dim: [0.1] * (dim - 1), "dimensions"),
        (lambda dim: [], "dimensions"),
        (lambda dim: [float("nan")] + [0.0] * (dim - 1), "NaN"),
        (lambda dim: [float("inf")] + [0.0] * (dim - 1), "infinite"),
    ],
    ids=["short", "empty", "nan", "inf"],
)
async def test_bad_embedding_is_an_invalid_argument(
    dense_stub: retriever_pb2_grpc.RetrieverServiceStub,
    encoder: BiEncoder,
    values: Callable[[int], list[float]],
    message: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await dense_stub.Retrieve(_request(values(encoder.dim), encoder.identity), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_bm25_shard_ignores_the_embedding(
    bm25_index: Path, server_settings: Callable[..., Settings]
) -> None:
    settings = server_settings(bm25_index / "shard-0")
    server, port = create_server(settings, load_shard_retriever(settings.index))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            plain = await stub.Retrieve(retriever_pb2.RetrieveRequest(query=QUERY, top_k=5), timeout=30)
            nonsense = np.full(7, np.nan, dtype=np.float32).tolist()
            given = await stub.Retrieve(_request(nonsense, "any-encoder@000000000000"), timeout=30)
    finally:
        await server.stop(None)
    assert [c.document.doc_id for c in given.candidates] == [c.document.doc_id for c in plain.candidates]


async def test_a_dense_shard_returns_stored_vectors_only_when_asked(
    dense_stub: retriever_pb2_grpc.RetrieverServiceStub, encoder: BiEncoder
) -> None:
    vector = encoder.encode_queries([QUERY])[0]
    plain = await dense_stub.Retrieve(_request(vector.tolist(), encoder.identity), timeout=30)
    assert all(not c.vector for c in plain.candidates)
    request = _request(vector.tolist(), encoder.identity)
    request.include_vectors = True
    with_vectors = await dense_stub.Retrieve(request, timeout=30)
    assert [c.document.doc_id for c in with_vectors.candidates] == [
        c.document.doc_id for c in plain.candidates
    ]
    for candidate in with_vectors.candidates:
        stored = np.asarray(candidate.vector, dtype=np.float32)
        assert stored.shape == (encoder.dim,)
        assert float(np.linalg.norm(stored)) == pytest.approx(1.0, abs=1e-4)
        # The stored vector is the one the score came from: inner product with the query vector.
        assert float(stored @ vector) == pytest.approx(candidate.score, abs=1e-4)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW8,Flat"])
def test_every_cpu_index_type_gives_its_stored_vectors_back(encoder: BiEncoder, factory: str) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((64, encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    documents = [Document(f"d{i}", "", f"text {i}") for i in range(64)]
    shard = ShardDescription("dense", 0, 1, "synthetic", "v1", 64, encoder=encoder.identity)
    retriever = FaissRetriever(build_faiss_index(vectors, factory), documents, encoder, shard)
    found = retriever.search(vectors[5:6], 3, with_vectors=True)
    assert all(c.vector is None for c in retriever.search(vectors[5:6], 3))
    assert found[0].document.doc_id == "d5"
    for candidate in found:
        assert candidate.vector is not None
        np.testing.assert_allclose(candidate.vector, vectors[int(candidate.document.doc_id[1:])], atol=1e-6)
