"""The poly-encoder reranker end to end: its math, the document vectors search-build-index stores, the
runtime over them, and the reranker's gRPC server on loopback serving an untrained artifact."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch
from search.v1 import reranker_pb2_grpc

from model_runtimes.poly_encoder import PolyEncoder, PolyEncoderModel, PolyEncoderRuntime
from model_runtimes.token_store import TokenStores
from reranker_service.config import Settings
from retriever_service.build_index import main as build_main
from search_common.artifacts import ArtifactError
from search_common.documents import Document
from tests.poly_encoder_support import poly_encoder_artifact
from tests.stored_vector_support import (
    assert_reranks_over_store,
    build_store,
    served_settings,
    serving,
    write_corpus,
)

TEXTS = [
    ("d0", "Aspirin", "Aspirin reduces the risk of heart attack in adults with heart disease."),
    ("d1", "", "Vitamin C deficiency causes scurvy; citrus fruit prevents it."),
    ("d2", "Sleep", "Night shift work disturbs the circadian rhythm and melatonin levels."),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", TEXTS)


@pytest.fixture(scope="module")
def vector_index(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("indexes") / "poly" / "v1"
    return build_store(corpus, out, "poly-encoder", poly_encoder_artifact("v1"))


def _model_texts() -> list[str]:
    return [Document(*row).model_text() for row in TEXTS]


def test_one_code_scores_the_cosine_of_its_vector_and_more_codes_let_the_document_choose() -> None:
    query = torch.nn.functional.normalize(torch.tensor([[[1.0, 0.0]]]), dim=-1)  # (1 query, 1 code, 2)
    documents = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    np.testing.assert_allclose(PolyEncoder.scores(query, documents)[0], [1.0, 0.0, 2**-0.5], atol=1e-6)
    two_codes = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]) * 10
    # Each document attends to the code nearest it, so both axis-aligned documents score high.
    scores = PolyEncoder.scores(two_codes, documents)[0]
    assert scores[0] > 0.99 and scores[1] > 0.99


def test_stored_vectors_score_as_encoding_at_request_time(vector_index: Path) -> None:
    model = PolyEncoderModel.load(poly_encoder_artifact("v1"))
    stores = TokenStores.load(vector_index)
    assert len(stores) == len(TEXTS) and all(stores.get(t).shape == (1, 384) for t in _model_texts())  # type: ignore[union-attr]
    lookups: list[tuple[int, int]] = []
    stored = PolyEncoderRuntime(model, token_stores=stores, on_lookups=lambda h, m: lookups.append((h, m)))
    texts = [*_model_texts(), "a text the index never saw"]
    with_store = stored.score("does aspirin prevent heart attacks?", texts)
    without = PolyEncoderRuntime(model).score("does aspirin prevent heart attacks?", texts)
    np.testing.assert_allclose(with_store, without, atol=2e-3)  # float16 storage
    assert lookups == [(len(TEXTS), 1)]
    with pytest.raises(ArtifactError, match="rebuild it with this model"):
        PolyEncoderRuntime(PolyEncoderModel.load(poly_encoder_artifact("v2")), token_stores=stores)


def test_build_refuses_a_colbert_or_cross_encoder_folder(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--corpus", str(corpus), "--out", str(tmp_path / "out"), "--kind", "poly-encoder"]
    with pytest.raises(SystemExit) as exited:
        build_main(argv)
    assert exited.value.code == 2 and "needs --encoder" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"name": "x", "version": "v1"}))
    assert build_main([*argv, "--encoder", str(tmp_path / "other")]) == 2
    assert "manifest lacks" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
async def poly_server(vector_index: Path) -> AsyncIterator[reranker_pb2_grpc.RerankerServiceStub]:
    # A root of store versions: the one this model encoded is found.
    settings = served_settings("poly-encoder", poly_encoder_artifact("v1"), vector_index.parent)
    async with serving(settings) as channel:
        yield reranker_pb2_grpc.RerankerServiceStub(channel)


async def test_the_reranker_serves_the_poly_encoder_over_the_store(
    poly_server: reranker_pb2_grpc.RerankerServiceStub,
) -> None:
    query = "aspirin and heart attack"
    expected = PolyEncoderRuntime(PolyEncoderModel.load(poly_encoder_artifact("v1"))).score(
        query, _model_texts()
    )
    await assert_reranks_over_store(
        poly_server, query, TEXTS, model=("poly-encoder-minilm", "v1"), expected=expected, atol=2e-3
    )


def test_a_token_store_is_refused_for_a_cross_encoder_backend() -> None:
    with pytest.raises(ValueError, match="goes with a stored-vector backend"):
        Settings(backend="onnx", artifact_dir=Path("x"), token_store=Path("y"))
