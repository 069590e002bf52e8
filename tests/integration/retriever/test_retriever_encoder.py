"""The real bi-encoder: unit-norm float32 output, input order kept after length sorting, weights identity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from model_runtimes.bi_encoder import BiEncoder, default_model_dir
from retriever_service.bootstrap import build_retrievers, load_index
from retriever_service.build_index import build_index
from retriever_service.config import Settings
from retriever_service.faiss_index import FaissRetriever
from search_common.artifacts import ArtifactError

TEXTS = ["short", "a somewhat longer sentence about cardiac arrest", "mid length text here", "x"]


def test_outputs_are_unit_norm_float32_in_input_order(encoder: BiEncoder) -> None:
    together = encoder.encode_documents(TEXTS, batch_size=2)
    assert together.dtype == np.float32 and together.shape == (4, encoder.dim) == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([encoder.encode_queries([t]) for t in TEXTS])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert encoder.encode_queries([]).shape == (0, 384)


def test_single_query_memo_returns_the_computed_vector_without_recomputing(
    encoder: BiEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "memo check: which protein binds the receptor"
    first = encoder.encode_queries([text])
    calls: list[list[str]] = []
    real = encoder._encode_locked

    def counting(texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        calls.append(texts)
        return real(texts, batch_size, show_progress)

    monkeypatch.setattr(encoder, "_encode_locked", counting)
    again = encoder.encode_queries([text])
    assert calls == []
    np.testing.assert_array_equal(first, again)
    again[0, 0] = 123.0  # a copy: the memo is not modified through it
    np.testing.assert_array_equal(encoder.encode_queries([text]), first)
    monkeypatch.setattr(encoder, "query_memo_size", 0)
    np.testing.assert_allclose(encoder.encode_queries([text]), first, atol=1e-6)
    assert calls == [[text]]


def test_identity_names_model_and_weights(encoder: BiEncoder) -> None:
    assert encoder.identity == f"all-MiniLM-L6-v2@{encoder.checksum[:12]}"
    assert len(encoder.checksum) == 64


def _fine_tuned_copy(tmp_path: Path) -> Path:
    """The packaged model with perturbed weights and a training-style manifest, in the same HF layout."""
    tuned = tmp_path / "tuned"
    shutil.copytree(default_model_dir(), tuned)
    weights = load_file(str(tuned / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + np.float32(0.01)
    save_file(weights, str(tuned / "model.safetensors"))
    (tuned / "manifest.json").write_text(json.dumps({"name": "minilm-scifact", "version": "v1"}))
    return tuned


def test_fine_tuned_copy_loads_with_its_own_identity(encoder: BiEncoder, tmp_path: Path) -> None:
    other = BiEncoder.load(_fine_tuned_copy(tmp_path), max_length=64)
    assert other.identity.startswith("minilm-scifact@")
    assert other.checksum != encoder.checksum
    assert other.dim == encoder.dim


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"model\.safetensors is missing"):
        BiEncoder.load(tmp_path)


def test_index_built_with_a_fine_tuned_encoder_needs_that_encoder(
    encoder: BiEncoder, corpus_path: Path, tmp_path: Path
) -> None:
    tuned_dir = _fine_tuned_copy(tmp_path)
    tuned = BiEncoder.load(tuned_dir, max_length=64)
    index = build_index(corpus_path, tmp_path / "idx", kind="dense", encoder=tuned)
    with pytest.raises(
        ArtifactError, match=r"built with encoder minilm-scifact@\w{12}, but the loaded encoder"
    ):
        load_index(index, encoder=encoder)
    (shard,) = load_index(index, encoder=tuned)
    assert shard.component == "dense/shard-0"
    # The server's path: --encoder names the directory.
    (served,) = build_retrievers(Settings(index=index / "shard-0", encoder=tuned_dir))
    assert isinstance(served, FaissRetriever)
    assert served.shard.encoder == tuned.identity
