"""The fusion grid and its tie-breaking, on a hand-made two-query example."""

from __future__ import annotations

from search_common.documents import Candidate, Document
from training.cross_encoder.fit_fusion import best_of, fusion_grid


def _head(*ids: str) -> list[Candidate]:
    return [Candidate(Document(doc_id=d, title="", text=d), float(-i)) for i, d in enumerate(ids)]


def test_grid_rewards_the_weight_that_lifts_the_relevant_document() -> None:
    heads = {"q1": _head("a", "b", "c"), "q2": _head("x", "y", "z")}
    # The cross-encoder puts the relevant document first for q1 and agrees with the first stage for q2.
    scores = {"q1": [0.0, 0.0, 5.0], "q2": [3.0, 2.0, 1.0]}
    qrels = {"q1": {"c": 1}, "q2": {"x": 1}}
    grid = fusion_grid(heads, scores, qrels, depths=[1, 3], weights=[0.0, 1.0])
    assert grid[3][1.0] > grid[3][0.0]
    assert grid[1][1.0] == grid[1][0.0]  # depth 1 cannot move anything
    assert best_of(grid) == {"depth": 3, "weight": 1.0, "ndcg@10": grid[3][1.0]}


def test_best_of_prefers_shallower_and_lighter_on_ties() -> None:
    grid = {10: {0.2: 0.7, 0.4: 0.7}, 20: {0.2: 0.7}}
    assert best_of(grid)["depth"] == 10 and best_of(grid)["weight"] == 0.2
