"""FAISS on the GPU: shards placed on GPU 0 return what the CPU index returns, also under concurrent search.

Skipped where FAISS sees no GPU (CI has none). Run on a GPU machine with faiss-gpu installed:
    python -m pytest tests/gpu -q
The vectors are synthetic and the encoder is a stand-in that only carries the dimension and identity: what
is under test is the index placement, not the embedding.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, cast

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from model_runtimes.bi_encoder import BiEncoder
from retriever_service.faiss_index import (
    FaissRetriever,
    apply_search_params,
    build_faiss_index,
    gpu_available,
    is_gpu_index,
    place_index,
)
from search_common.documents import Document, ShardDescription

pytestmark = pytest.mark.skipif(not gpu_available(), reason="FAISS sees no GPU")

DIM = 384
N = 20_000


@dataclass(frozen=True)
class _VectorsOnlyEncoder:
    dim: int = DIM
    identity: str = "synthetic@000000000000"


def _unit(rows: int, seed: int) -> npt.NDArray[np.float32]:
    x = np.random.default_rng(seed).standard_normal((rows, DIM), dtype=np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


@pytest.fixture(scope="module")
def vectors() -> npt.NDArray[np.float32]:
    return _unit(N, 0)


@pytest.fixture(scope="module")
def queries() -> npt.NDArray[np.float32]:
    return _unit(64, 1)


def _retriever(index: faiss.Index) -> FaissRetriever:
    documents = [Document(f"d{i}", "", f"text {i}") for i in range(index.ntotal)]
    shard = ShardDescription("dense", 0, 1, "synthetic", "v1", index.ntotal, _VectorsOnlyEncoder.identity)
    return FaissRetriever(index, documents, cast(BiEncoder, _VectorsOnlyEncoder()), shard)


def _overlap(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("IVF128,Flat", "nprobe=16")])
def test_gpu_copy_returns_what_the_cpu_index_returns(
    factory: str, params: str, vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> None:
    cpu = build_faiss_index(vectors, factory)  # trained and filled on the GPU, handed back on the CPU
    assert not is_gpu_index(cpu) and cpu.ntotal == N
    apply_search_params(cpu, params)
    gpu = place_index(cpu, "gpu", what="shard-0")
    assert is_gpu_index(gpu)
    apply_search_params(gpu, params)
    if params:
        assert cast(Any, faiss.downcast_index(gpu)).nprobe == 16
    cpu_scores, cpu_ids = cpu.search(queries, 100)
    gpu_scores, gpu_ids = gpu.search(queries, 100)
    assert _overlap(cpu_ids, gpu_ids) >= 0.99
    np.testing.assert_allclose(np.sort(gpu_scores, axis=1), np.sort(cpu_scores, axis=1), atol=1e-4)


def test_hnsw_stays_on_the_cpu_under_auto_and_is_refused_under_gpu(
    vectors: npt.NDArray[np.float32],
) -> None:
    hnsw = build_faiss_index(vectors[:2000], "HNSW32,Flat")
    assert place_index(hnsw, "auto", what="shard-0") is hnsw
    with pytest.raises(ValueError, match="cannot be searched on the GPU"):
        place_index(hnsw, "gpu", what="shard-0")


def test_concurrent_searches_on_gpu_shards_agree_with_sequential_ones(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> None:
    # Two shards of one process share its GPU resources; eight threads search both at once.
    half = len(vectors) // 2
    shards = [
        _retriever(place_index(build_faiss_index(part, "Flat"), "gpu", what=f"shard-{i}"))
        for i, part in enumerate((vectors[:half], vectors[half:]))
    ]
    assert all(shard.on_gpu for shard in shards)
    jobs = [(s, i) for s in range(len(shards)) for i in range(len(queries))]

    def search(job: tuple[int, int]) -> list[str]:
        shard, i = job
        return [c.document.doc_id for c in shards[shard].search(queries[i][None, :], 50)]

    expected = {job: search(job) for job in jobs}
    results: dict[tuple[int, int], list[str]] = {}
    errors: list[Any] = []

    def worker(offset: int) -> None:
        try:
            for job in jobs[offset::8]:
                results[job] = search(job)
        except Exception as exc:  # reported below, outside the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == expected
