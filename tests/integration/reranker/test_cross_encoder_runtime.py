"""CrossEncoderRuntime over a real exported artifact: ordering, batching, truncation, validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from search_common.artifacts import ArtifactError
from search_common.cross_encoder_runtime import CrossEncoderRuntime

TEXTS = [
    "Aspirin reduces the risk of heart attack.",
    "Short.",
    "A long document " + "about many things " * 40,
    "Vitamin D deficiency is common in winter.",
    "",
]


@pytest.fixture(scope="module")
def runtime(artifact_v1: Path) -> CrossEncoderRuntime:
    return CrossEncoderRuntime.load(artifact_v1, intra_op_threads=1)


def test_identity_comes_from_the_manifest(runtime: CrossEncoderRuntime) -> None:
    assert (runtime.name, runtime.version, runtime.max_length) == ("cross-encoder-minilm", "v1", 128)


def test_scores_follow_input_order_whatever_the_batching(runtime: CrossEncoderRuntime) -> None:
    scores = runtime.score("does aspirin help the heart", TEXTS, batch_size=2)
    assert scores.dtype == np.float32 and scores.shape == (len(TEXTS),)
    one_by_one = np.array([runtime.score("does aspirin help the heart", [t])[0] for t in TEXTS])
    np.testing.assert_allclose(scores, one_by_one, atol=1e-5)
    permutation = [3, 0, 4, 2, 1]
    permuted = runtime.score("does aspirin help the heart", [TEXTS[i] for i in permutation], batch_size=3)
    np.testing.assert_allclose(permuted, scores[permutation], atol=1e-5)


def test_pairs_truncate_the_document_and_cap_a_long_query(runtime: CrossEncoderRuntime) -> None:
    long_query = "why " * 500
    scores = runtime.score(long_query, TEXTS, max_length=32)
    assert np.isfinite(scores).all()
    short = runtime.score("q", ["word " * 1000], max_length=16)
    assert np.isfinite(short).all()
    assert runtime.score("q", []).shape == (0,)


def test_pairs_of_different_queries(runtime: CrossEncoderRuntime) -> None:
    pairs = runtime.score_pairs(["aspirin", "vitamin"], [TEXTS[0], TEXTS[3]])
    np.testing.assert_allclose(
        pairs, [runtime.score("aspirin", [TEXTS[0]])[0], runtime.score("vitamin", [TEXTS[3]])[0]], atol=1e-5
    )


def test_a_corrupt_artifact_is_refused_with_a_clear_message(artifact_v1: Path, tmp_path: Path) -> None:
    broken = tmp_path / "v1"
    shutil.copytree(artifact_v1, broken)
    with (broken / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for tokenizer\.json"):
        CrossEncoderRuntime.load(broken)
    manifest = json.loads((artifact_v1 / "manifest.json").read_text())
    manifest["format_version"] = 2
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format_version 2 is not supported"):
        CrossEncoderRuntime.load(broken)
    with pytest.raises(ArtifactError, match="artifact directory not found"):
        CrossEncoderRuntime.load(tmp_path / "missing")
