"""The ONNX query encoder against the torch BiEncoder it is exported from (the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from model_runtimes import query_encoder_onnx as query_encoder_onnx
from model_runtimes.bi_encoder import BiEncoder
from model_runtimes.onnx_graph_cache import CACHE_ENV
from model_runtimes.query_encoder_onnx import OnnxQueryEncoder, query_encoder
from search_common.artifacts import ArtifactError

QUERIES = [
    "scurvy",
    "does vitamin d supplementation reduce fractures in older adults?",
    "a long question " + "about the mechanisms of statin-induced myopathy " * 40,  # past max_length
]


@pytest.fixture(scope="module")
def onnx_encoder(encoder: BiEncoder) -> OnnxQueryEncoder:
    built = query_encoder(encoder, "onnx")
    assert isinstance(built, OnnxQueryEncoder)
    return built


def test_onnx_vectors_match_torch_and_keep_the_identity(
    encoder: BiEncoder, onnx_encoder: OnnxQueryEncoder
) -> None:
    assert onnx_encoder.identity == encoder.identity  # what dense shards check the vector against
    memo, encoder.query_memo_size = encoder.query_memo_size, 0
    try:
        together = onnx_encoder.encode_queries(QUERIES)
        np.testing.assert_allclose(together, encoder.encode_queries(QUERIES), atol=1e-5)
        for i, query in enumerate(QUERIES):  # alone (no padding) as in a batch (padded)
            np.testing.assert_allclose(onnx_encoder.encode_queries([query])[0], together[i], atol=1e-5)
    finally:
        encoder.query_memo_size = memo
    assert together.dtype == np.float32 and together.shape == (3, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_concurrent_calls_give_the_same_vectors(onnx_encoder: OnnxQueryEncoder) -> None:
    pair = QUERIES[:2]  # two queries: past the single-query memo, into the model every time
    alone = onnx_encoder.encode_queries(pair)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: onnx_encoder.encode_queries(pair), range(16)))
    for result in results:
        np.testing.assert_array_equal(result, alone)


def test_a_repeated_query_comes_from_the_memo_as_a_copy(onnx_encoder: OnnxQueryEncoder) -> None:
    first = onnx_encoder.encode_queries(["what causes scurvy?"])
    first[0, 0] = 42.0  # the caller's copy, not the memo's
    again = onnx_encoder.encode_queries(["what causes scurvy?"])
    np.testing.assert_allclose(
        again, onnx_encoder.encode_queries(["what causes scurvy?", "x"])[:1], atol=1e-6
    )


def test_the_engine_is_chosen_in_one_place(encoder: BiEncoder, onnx_encoder: OnnxQueryEncoder) -> None:
    assert query_encoder(encoder, "torch") is encoder
    assert isinstance(query_encoder(encoder, "auto"), OnnxQueryEncoder)  # a CPU with ONNX Runtime
    with pytest.raises(ValueError, match="auto, torch, onnx"):
        query_encoder(encoder, "tensorrt")  # type: ignore[arg-type]


def test_an_export_that_disagrees_with_torch_is_refused_and_not_kept(
    encoder: BiEncoder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    real_export = query_encoder_onnx.export_onnx

    def export_other_weights(model: torch.nn.Module) -> bytes:
        other = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in other.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        return real_export(other)

    monkeypatch.setattr(query_encoder_onnx, "export_onnx", export_other_weights)
    with pytest.raises(ArtifactError, match=r"differs from torch.*--query-encoder-engine torch"):
        query_encoder(encoder, "onnx")
    assert list(tmp_path.iterdir()) == []  # the next start exports again instead of reusing it


def test_the_second_load_takes_the_graph_from_the_cache(
    encoder: BiEncoder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    first = query_encoder(encoder, "onnx")
    assert len(list(tmp_path.glob("*.onnx"))) == 1

    def no_export(model: torch.nn.Module) -> bytes:
        raise AssertionError("exported again despite the cache")

    monkeypatch.setattr(query_encoder_onnx, "export_onnx", no_export)
    second = query_encoder(encoder, "onnx")
    np.testing.assert_array_equal(second.encode_queries(QUERIES), first.encode_queries(QUERIES))


def test_int8_documents_stay_close_to_torch_and_do_not_depend_on_their_neighbours(
    encoder: BiEncoder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    documents = [
        "Scurvy is a disease resulting from a lack of vitamin C. " * 3,
        "Statins lower LDL cholesterol; myopathy is their most common adverse effect.",
        "Short.",
        "x " * 600,  # past max_length
    ]
    int8 = OnnxQueryEncoder.from_bi_encoder(encoder, threads=2, scheme="int8-blockwise-weights")
    vectors = int8.encode_each(documents)
    reference = encoder.encode_documents(documents)
    assert vectors.shape == reference.shape
    assert (vectors * reference).sum(axis=1).min() >= query_encoder_onnx.INT8_MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for i, document in enumerate(documents):  # one pass per document: alone or among others, the same
        np.testing.assert_array_equal(int8.encode_each([document])[0], vectors[i])
