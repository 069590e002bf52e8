"""Index build, save/load round trip, sharded vs single index, refusal of corrupt or mismatched artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from model_runtimes.bi_encoder import BiEncoder
from retriever_service.bootstrap import load_index, load_shard_retriever
from retriever_service.build_index import BuildError, build_index
from retriever_service.faiss_index import FaissRetriever, gpu_available
from search_common.artifacts import ArtifactError, sha256_file
from search_common.corpus_file import load_corpus
from search_common.documents import Candidate
from search_common.errors import DeadlineExceeded, InvalidArgument

QUERIES = [
    "vitamin c deficiency and scurvy",
    "statins lower cholesterol",
    "memory neurons in the cortex",
    "influenza vaccine antibodies",
    "melatonin and circadian rhythm",
    "chemotherapy for breast cancer",
]


def test_manifests_follow_the_contract(
    dense_sharded_index: Path, corpus_path: Path, encoder: BiEncoder
) -> None:
    top = json.loads((dense_sharded_index / "manifest.json").read_text())
    assert top["kind"] == "dense" and top["num_shards"] == 3 and top["num_documents"] == 36
    assert top["metric"] == "inner_product" and top["dim"] == encoder.dim and top["factory"] == "Flat"
    assert top["encoder"] == {"id": encoder.identity, "checksum": encoder.checksum}
    assert top["corpus_sha256"] == sha256_file(corpus_path)
    docs = load_corpus(corpus_path)
    for shard_id in range(3):
        shard = json.loads((dense_sharded_index / f"shard-{shard_id}" / "manifest.json").read_text())
        assert (shard["shard_id"], shard["num_shards"], shard["version"]) == (shard_id, 3, top["version"])
        assert set(shard["files"]) == {"index.faiss", "docs.jsonl"}
        # FAISS's (nshards, shard_id) split: contiguous rows.
        ids = [
            json.loads(line)["_id"]
            for line in (dense_sharded_index / f"shard-{shard_id}" / "docs.jsonl").read_text().splitlines()
        ]
        assert ids == [d.doc_id for d in docs[12 * shard_id : 12 * (shard_id + 1)]]


def test_save_load_round_trip(dense_index: Path, corpus_path: Path, encoder: BiEncoder) -> None:
    (retriever,) = load_index(dense_index, encoder=encoder)
    assert isinstance(retriever, FaissRetriever)
    docs = load_corpus(corpus_path)
    expected = encoder.encode_documents([d.model_text() for d in docs])
    stored = retriever._index.reconstruct_n(0, len(docs))
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    # A document's own text finds itself first, with cosine ~1.
    result = retriever.search_sync(docs[7].model_text(), 3)
    assert result.candidates[0].document == docs[7]
    assert result.candidates[0].score == pytest.approx(1.0, abs=1e-4)
    assert set(result.timings) == {"embed", "search"}


@pytest.mark.parametrize(("factory", "params"), [("HNSW32,Flat", "efSearch=64"), ("IVF4,Flat", "nprobe=4")])
async def test_other_factories_build_load_and_search(
    factory: str, params: str, corpus_path: Path, encoder: BiEncoder, tmp_path: Path
) -> None:
    out = build_index(
        corpus_path, tmp_path / "idx", kind="dense", factory=factory, search_params=params, encoder=encoder
    )
    (retriever,) = load_index(out, encoder=encoder)
    result = await retriever.retrieve("vitamin c and scurvy", 5)
    assert len(result.candidates) == 5
    assert result.candidates[0].document.title.startswith("vitamin")
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)


def test_ivf_with_more_lists_than_vectors_is_refused(
    corpus_path: Path, encoder: BiEncoder, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match=r"asks for 64 IVF lists but the shard has only 36 vectors"):
        build_index(corpus_path, tmp_path / "idx", kind="dense", factory="IVF64,Flat", encoder=encoder)
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(
    ("factory", "params", "message"),
    [
        ("NotAnIndex", "", "invalid FAISS factory string 'NotAnIndex'"),
        ("Flat", "nprobe=banana", "invalid FAISS search parameters"),
    ],
)
def test_bad_factory_or_params_are_refused(
    factory: str, params: str, message: str, corpus_path: Path, encoder: BiEncoder, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match=message):
        build_index(
            corpus_path,
            tmp_path / "idx",
            kind="dense",
            factory=factory,
            search_params=params,
            encoder=encoder,
        )


def test_bm25_refuses_several_shards(corpus_path: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="BM25 indexes have exactly one shard"):
        build_index(corpus_path, tmp_path / "idx", kind="bm25", num_shards=2)


def test_existing_output_is_not_overwritten_by_default(bm25_index: Path, corpus_path: Path) -> None:
    with pytest.raises(ArtifactError, match="already exists"):
        build_index(corpus_path, bm25_index, kind="bm25")


def _merge(per_shard: list[list[Candidate]], k: int) -> list[Candidate]:
    return sorted((c for cands in per_shard for c in cands), key=lambda c: -c.score)[:k]


@pytest.mark.parametrize("k", [1, 5, 20])
def test_sharded_index_matches_single_index(
    dense_index: Path, dense_sharded_index: Path, encoder: BiEncoder, k: int
) -> None:
    (single,) = load_index(dense_index, encoder=encoder)
    shards = load_index(dense_sharded_index, encoder=encoder)
    assert len(shards) == 3
    vectors = encoder.encode_queries(QUERIES)
    assert isinstance(single, FaissRetriever)
    reference = single.search_vectors(vectors, k)
    per_shard = [s.search_vectors(vectors, k) for s in shards if isinstance(s, FaissRetriever)]
    for q in range(len(QUERIES)):
        merged = _merge([cands[q] for cands in per_shard], k)
        ref = reference[q]
        np.testing.assert_allclose([c.score for c in merged], [c.score for c in ref], atol=1e-5)
        # Ids must agree except among ties at the cut-off score (FAISS's check_ref_knn_with_draws idea).
        cutoff = ref[-1].score
        strict = {c.document.doc_id for c in ref if c.score > cutoff + 1e-5}
        assert strict <= {c.document.doc_id for c in merged}


async def test_bm25_round_trip(bm25_index: Path, corpus_path: Path) -> None:
    (retriever,) = load_index(bm25_index)
    result = await retriever.retrieve("scurvy and vitamin c deficiency", 5)
    assert result.candidates and all(c.document.title.startswith("vitamin") for c in result.candidates)
    stopwords_only = await retriever.retrieve("the and of", 5)
    assert stopwords_only.candidates == []
    description = await retriever.describe()
    assert (description.kind, description.num_shards, description.num_documents) == ("bm25", 1, 36)


async def test_expired_budget_is_deadline_exceeded(dense_index: Path, encoder: BiEncoder) -> None:
    (retriever,) = load_index(dense_index, encoder=encoder)
    with pytest.raises(DeadlineExceeded, match="dense/shard-0: retrieval exceeded"):
        await retriever.retrieve("vitamin", 3, timeout=0)


async def test_bad_input_is_refused_in_process(bm25_index: Path) -> None:
    (retriever,) = load_index(bm25_index, max_top_k=5)
    with pytest.raises(InvalidArgument, match="exceeds this server's maximum of 5"):
        await retriever.retrieve("vitamin", 6)


# --- corrupt and mismatched artifacts ---


@pytest.fixture
def shard_copy(dense_index: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(dense_index, copy)
    return copy / "shard-0"


def _edit_manifest(shard_dir: Path, **changes: object) -> None:
    path = shard_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_checksum_mismatch_is_refused(shard_copy: Path, encoder: BiEncoder) -> None:
    with (shard_copy / "docs.jsonl").open("a") as handle:
        handle.write('{"_id": "x", "title": "", "text": "smuggled"}\n')
    with pytest.raises(ArtifactError, match=r"checksum mismatch for docs\.jsonl"):
        load_shard_retriever(shard_copy, encoder=encoder)


def test_missing_manifest_is_refused(shard_copy: Path, encoder: BiEncoder) -> None:
    (shard_copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_shard_retriever(shard_copy, encoder=encoder)


def test_incomplete_manifest_is_refused(shard_copy: Path, encoder: BiEncoder) -> None:
    manifest = json.loads((shard_copy / "manifest.json").read_text())
    del manifest["factory"]
    (shard_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest lacks factory"):
        load_shard_retriever(shard_copy, encoder=encoder)


def test_encoder_mismatch_is_refused(shard_copy: Path, encoder: BiEncoder) -> None:
    _edit_manifest(shard_copy, encoder={"id": "other-model@0123456789ab", "checksum": "0" * 64})
    with pytest.raises(ArtifactError, match="built with encoder other-model@0123456789ab"):
        load_shard_retriever(shard_copy, encoder=encoder)


def test_wrong_dimension_is_refused(shard_copy: Path, encoder: BiEncoder) -> None:
    small = faiss.IndexFlatIP(8)
    small.add(np.random.default_rng(0).standard_normal((36, 8)).astype(np.float32))
    faiss.write_index(small, str(shard_copy / "index.faiss"))
    files = json.loads((shard_copy / "manifest.json").read_text())["files"]
    files["index.faiss"] = sha256_file(shard_copy / "index.faiss")
    _edit_manifest(shard_copy, files=files, dim=8)
    with pytest.raises(ArtifactError, match="index dimension 8 != encoder dimension 384"):
        load_shard_retriever(shard_copy, encoder=encoder)
    # Even when the manifest lies about the dimension, the index file is checked.
    _edit_manifest(shard_copy, dim=384)
    with pytest.raises(ArtifactError, match=r"index\.faiss has dimension 8, manifest says 384"):
        load_shard_retriever(shard_copy, encoder=encoder)


def test_count_mismatch_is_refused(shard_copy: Path, encoder: BiEncoder) -> None:
    _edit_manifest(shard_copy, num_documents=35)
    with pytest.raises(ArtifactError, match="holds 36 vectors, manifest says 35"):
        load_shard_retriever(shard_copy, encoder=encoder)


def test_factory_mismatch_is_refused(shard_copy: Path, encoder: BiEncoder) -> None:
    _edit_manifest(shard_copy, factory="HNSW32,Flat")
    with pytest.raises(ArtifactError, match="not what factory 'HNSW32,Flat' builds"):
        load_shard_retriever(shard_copy, encoder=encoder)


def test_unreadable_index_file_is_refused(shard_copy: Path, encoder: BiEncoder) -> None:
    (shard_copy / "index.faiss").write_bytes(b"not a faiss index")
    files = json.loads((shard_copy / "manifest.json").read_text())["files"]
    files["index.faiss"] = sha256_file(shard_copy / "index.faiss")
    _edit_manifest(shard_copy, files=files)
    with pytest.raises(ArtifactError, match="not a readable FAISS index"):
        load_shard_retriever(shard_copy, encoder=encoder)


def test_shard_from_another_version_is_refused(
    dense_sharded_index: Path, encoder: BiEncoder, tmp_path: Path
) -> None:
    copy = tmp_path / "index"
    shutil.copytree(dense_sharded_index, copy)
    _edit_manifest(copy / "shard-1", version="v19990101T000000Z")
    with pytest.raises(ArtifactError, match="does not belong to"):
        load_index(copy, encoder=encoder)


@pytest.mark.skipif(gpu_available(), reason="FAISS sees a GPU here")
def test_gpu_placement_without_a_gpu_is_refused(dense_index: Path, encoder: BiEncoder) -> None:
    with pytest.raises(ArtifactError, match=r"shard-0: FAISS device 'gpu' asked for, but FAISS sees no GPU"):
        load_index(dense_index, encoder=encoder, faiss_device="gpu")
    (retriever,) = load_index(dense_index, encoder=encoder, faiss_device="auto")
    assert isinstance(retriever, FaissRetriever) and not retriever.on_gpu
