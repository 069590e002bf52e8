"""Learned fusion: the features the gateway computes, the artifact it loads, the order it gives, the fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.offline_stack import require_servable
from gateway.bootstrap import load_fusion_models
from gateway.learned_fusion import FEATURES, fusion_features, load_learned_fusion
from gateway.merge import rerank_order
from gateway.variants import Variant
from search_common.artifacts import ArtifactError
from search_common.documents import Candidate, Document
from tests.fakes import FakeReranker
from tests.fusion_support import HEAD, fusion_artifact, synthetic_evidence
from training.fusion.fit_learned import cross_validate

COLUMN = {name: i for i, name in enumerate(FEATURES)}


def test_features_are_ranks_and_standardised_scores_with_missing_as_nan() -> None:
    lists = {"dense": [("a", 0.9), ("b", 0.5), ("c", 0.1)], "bm25": [("c", 12.0), ("a", 4.0)]}
    rows = fusion_features(["a", "c", "b"], lists, [0.0, 3.0, 3.0])

    assert rows.shape == (3, len(FEATURES))
    assert rows[:, COLUMN["first_stage_rank"]].tolist() == [1, 2, 3]
    assert rows[:, COLUMN["dense_rank"]].tolist() == [1, 3, 2]
    assert rows[:, COLUMN["bm25_rank"]][:2].tolist() == [2, 1]
    assert math.isnan(rows[2, COLUMN["bm25_rank"]]) and math.isnan(rows[2, COLUMN["bm25_z"]])
    dense = np.array([0.9, 0.5, 0.1])
    assert rows[0, COLUMN["dense_z"]] == pytest.approx((0.9 - dense.mean()) / dense.std())
    # Equal rerank scores keep first-stage order; the gap is to the query's best score.
    assert rows[:, COLUMN["rerank_rank"]].tolist() == [3, 1, 2]
    assert rows[:, COLUMN["rerank_gap"]].tolist()[1:] == [0.0, 0.0]
    assert rows[0, COLUMN["rerank_z"]] < 0 < rows[1, COLUMN["rerank_z"]]


def test_features_are_unchanged_by_a_scale_or_shift_of_any_stage_scores() -> None:
    lists = {"dense": [("a", 0.9), ("b", 0.5), ("c", 0.1)], "bm25": [("c", 12.0), ("a", 4.0), ("b", 1.0)]}
    scaled = {g: [(d, 7.0 * s - 3.0) for d, s in ranked] for g, ranked in lists.items()}
    plain = fusion_features(["a", "b", "c"], lists, [0.2, -1.0, 4.0])
    moved = fusion_features(["a", "b", "c"], scaled, [10 * s + 5 for s in (0.2, -1.0, 4.0)])
    np.testing.assert_allclose(plain, moved)


def test_a_group_the_variant_did_not_search_is_missing_and_one_candidate_does_not_divide_by_zero() -> None:
    rows = fusion_features(["a"], {"dense": [("a", 0.3)]}, [2.0])
    assert rows[0, COLUMN["dense_z"]] == 0.0 and rows[0, COLUMN["rerank_z"]] == 0.0
    assert math.isnan(rows[0, COLUMN["bm25_rank"]])
    assert fusion_features([], {}, []).shape == (0, len(FEATURES))
    with pytest.raises(ValueError, match="2 rerank scores for 1"):
        fusion_features(["a"], {}, [1.0, 2.0])


def test_learned_scores_order_the_head_and_the_tail_keeps_first_stage_order() -> None:
    candidates = [Candidate(Document(f"d{i}", "", "x"), 1.0 - i / 10) for i in range(5)]
    ranked = rerank_order(candidates, [5.0, 4.0, 3.0], fusion="learned", learned_scores=[0.1, 0.3, 0.2])
    assert [c.document.doc_id for c in ranked] == ["d1", "d2", "d0", "d3", "d4"]
    assert [c.rerank_score for c in ranked[:3]] == [4.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="go with fusion='learned'"):
        rerank_order(candidates, [1.0], fusion="learned")
    with pytest.raises(ValueError, match="go with fusion='learned'"):
        rerank_order(candidates, [1.0], fusion="rrf", learned_scores=[1.0])
    with pytest.raises(ValueError, match="2 learned scores for a head of 1"):
        rerank_order(candidates, [1.0], fusion="learned", learned_scores=[1.0, 2.0])


def test_a_published_model_loads_and_has_learned_its_rule(tmp_path: Path) -> None:
    model = load_learned_fusion(fusion_artifact(tmp_path))
    assert (model.name, model.first_stage, model.rerank_depth) == ("learned-test", "dense", HEAD)
    evidence, _ = synthetic_evidence("best_reranked", queries=5, seed=99)
    for seen in evidence.values():
        scores = model.score(seen.features(HEAD))
        assert int(np.argmax(scores)) == int(np.argmax(seen.rerank_scores))
    assert model.score(np.empty((0, len(FEATURES)))) == []


def _break(artifact: Path, **changes: object) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest.update(changes)
    (artifact / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "cross-encoder"}, "not 'learned-fusion'"),
        ({"feature_set": "stage-ranks-v0"}, "fitted on feature set"),
        ({"features": ["first_stage_rank"]}, "fitted on feature set"),
        ({"checksums": {"model.txt": "0" * 64}}, "model.txt"),
    ],
)
def test_a_wrong_or_altered_artifact_is_refused_with_what_is_wrong(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    artifact = fusion_artifact(tmp_path)
    _break(artifact, **changes)
    with pytest.raises(ArtifactError, match=message):
        load_learned_fusion(artifact)


def test_a_directory_without_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_learned_fusion(tmp_path)


def test_cross_validation_finds_the_rule_the_first_stage_and_reranker_miss() -> None:
    evidence, qrels = synthetic_evidence("best_bm25", queries=40)
    report = cross_validate(evidence, qrels, [HEAD], seed=13)
    best = max(row["learned"] for row in report["grid"])
    assert best > 0.95
    assert report["first_stage"] < 0.7  # the relevant document sits anywhere in the dense order
    assert all(row["reranker_alone"] < 0.8 for row in report["grid"])  # noise


def test_offline_runs_name_the_flag_a_learned_variant_needs(tmp_path: Path) -> None:
    variant = Variant(
        "lf", 0.0, "hybrid", 100, reranker="ce", rerank_depth=5, fusion="learned", fusion_model="learned-test"
    )
    reranker = FakeReranker(lambda query, doc: 1.0)
    with pytest.raises(ValueError, match="needs a reranker; pass --reranker"):
        require_servable([variant], None, {})
    missing = r"needs the fusion model 'learned-test', not loaded \(--fusion-model\)"
    with pytest.raises(ValueError, match=missing):
        require_servable([variant], reranker, {})
    dense_model = load_learned_fusion(fusion_artifact(tmp_path, first_stage="dense"))
    with pytest.raises(ValueError, match="fitted for the dense first stage, not hybrid"):
        require_servable([variant], reranker, {"learned-test": dense_model})


def test_the_gateway_loads_fusion_models_by_name_and_refuses_two_of_one_name(tmp_path: Path) -> None:
    one = fusion_artifact(tmp_path / "a", name="one")
    two = fusion_artifact(tmp_path / "b", name="two")
    assert set(load_fusion_models([one, two])) == {"one", "two"}
    again = fusion_artifact(tmp_path / "c", name="one")
    with pytest.raises(ArtifactError, match="a second fusion model named 'one'"):
        load_fusion_models([one, again])
