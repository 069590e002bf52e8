"""Token stores (model_runtimes.token_store) and MaxSim: pure array logic, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from model_runtimes.late_interaction import maxsim
from model_runtimes.token_store import TOKENS_FILE, TokenStore, TokenStores, text_key, write_token_store
from search_common.artifacts import ArtifactError

MODEL = {"name": "colbert-test", "version": "v1", "weights_sha256": "ab" * 32}


def _vectors(rng: np.random.Generator, tokens: int, dim: int = 8) -> npt.NDArray[np.float32]:
    raw = rng.standard_normal((tokens, dim)).astype(np.float32)
    unit: npt.NDArray[np.float32] = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return unit


def test_a_store_gives_back_each_texts_vectors_and_none_for_unknown_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    texts = ["first document", "second, longer document", "third"]
    vectors = [_vectors(rng, n) for n in (3, 7, 1)]
    write_token_store(tmp_path / "s", texts, vectors, model=MODEL, document_length=64)
    store = TokenStore(tmp_path / "s")
    assert len(store) == 3
    for text, expected in zip(texts, vectors, strict=True):
        found = store.get(text)
        assert found is not None and found.dtype == np.float16
        np.testing.assert_allclose(found, expected, atol=1e-3)
    assert store.get("first document ") is None  # an edited text is not served stale vectors
    assert store.manifest["num_tokens"] == 11 and store.model == MODEL


def test_a_text_whose_key_ends_in_a_nul_byte_is_found(tmp_path: Path) -> None:
    # numpy's fixed-width bytes drop trailing NULs when read back: one document in 256 was never found,
    # and was encoded again at every request that retrieved it.
    texts = [t for t in (f"document {i}" for i in range(5000)) if text_key(t).endswith(b"\0")][:3]
    assert len(texts) == 3
    rng = np.random.default_rng(1)
    vectors = [_vectors(rng, 2) for _ in texts]
    write_token_store(tmp_path / "s", [*texts, "plain"], [*vectors, _vectors(rng, 1)], model=MODEL,
                      document_length=8)  # fmt: skip
    store = TokenStore(tmp_path / "s")
    for text, expected in zip(texts, vectors, strict=True):
        found = store.get(text)
        assert found is not None
        np.testing.assert_allclose(found, expected, atol=1e-3)


def test_duplicate_texts_are_stored_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    write_token_store(
        tmp_path / "s", ["same", "same", "other"], [_vectors(rng, 2)] * 3, model=MODEL, document_length=8
    )
    assert len(TokenStore(tmp_path / "s")) == 2


def test_a_changed_file_or_a_foreign_manifest_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    write_token_store(tmp_path / "s", ["a", "b"], [_vectors(rng, 2)] * 2, model=MODEL, document_length=8)
    tokens = tmp_path / "s" / TOKENS_FILE
    tokens.write_bytes(tokens.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(ArtifactError, match=TOKENS_FILE):
        TokenStore(tmp_path / "s")
    manifest = tmp_path / "s" / "manifest.json"
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "kind": "dense"}))
    with pytest.raises(ArtifactError, match="not a token store"):
        TokenStore(tmp_path / "s", verify=False)


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one document"):
        write_token_store(tmp_path / "empty", [], [], model=MODEL, document_length=8)
    with pytest.raises(ValueError, match="token vectors must be"):
        write_token_store(
            tmp_path / "ragged",
            ["a", "b"],
            [np.zeros((2, 8)), np.zeros((2, 4))],
            model=MODEL,
            document_length=8,
        )
    assert not (tmp_path / "empty").exists() and not (tmp_path / "ragged").exists()


def test_shard_stores_are_one_lookup_and_must_share_a_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for shard, text in enumerate(("zero", "one")):
        write_token_store(
            tmp_path / "index" / f"shard-{shard}", [text], [_vectors(rng, 2)], model=MODEL, document_length=8
        )
    stores = TokenStores.load(tmp_path / "index")
    assert len(stores) == 2 and stores.get("one") is not None and stores.get("two") is None
    write_token_store(
        tmp_path / "other", ["x"], [_vectors(rng, 2)], model={**MODEL, "version": "v2"}, document_length=8
    )
    with pytest.raises(ArtifactError, match="different models"):
        TokenStores([TokenStore(tmp_path / "index" / "shard-0"), TokenStore(tmp_path / "other")])
    with pytest.raises(ArtifactError, match="neither a token store"):
        TokenStores.load(tmp_path / "nothing-here")


def test_a_root_of_versions_gives_the_one_the_served_model_encoded(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    older, newer = MODEL, {**MODEL, "version": "v2"}
    for version, model in (("v20260101T000000Z", older), ("v20260102T000000Z", newer)):
        write_token_store(
            tmp_path / "root" / version / "shard-0",
            [version],
            [_vectors(rng, 2)],
            model=model,
            document_length=8,
        )
    # The older model is served after a newer one's store was built: it gets its own, not the newest.
    assert TokenStores.for_model(tmp_path / "root", older).get("v20260101T000000Z") is not None
    assert TokenStores.for_model(tmp_path / "root", newer).get("v20260102T000000Z") is not None
    one_version = tmp_path / "root" / "v20260102T000000Z"
    assert TokenStores.for_model(one_version, newer).model == newer  # a version is taken as given
    with pytest.raises(ArtifactError, match="no token store encoded by"):
        TokenStores.for_model(tmp_path / "root", {**MODEL, "version": "v3"})


def test_maxsim_sums_each_query_tokens_best_match() -> None:
    query = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    near = np.array([[0.9, 0.1], [0.2, 0.8], [0.0, 0.5]], dtype=np.float16)
    far = np.array([[0.1, 0.0]], dtype=np.float32)
    scores = maxsim(query, [near, far, np.zeros((0, 2), dtype=np.float32)])
    np.testing.assert_allclose(scores, [0.9 + 0.8, 0.1 + 0.0, 0.0], atol=1e-3)
