"""training.fusion.fit_rrf's grid and choice: plain data, no models."""

from __future__ import annotations

import pytest

from search_common.documents import Candidate, Document
from training.fusion.fit_rrf import Setting, choose, fused_ranking, weight_grid


def test_the_weight_grid_covers_every_tuple_summing_to_at_most_one() -> None:
    assert weight_grid(1, 0.25) == [(0.25,), (0.5,), (0.75,), (1.0,)]
    two = weight_grid(2, 0.5)
    assert two == [(0.0, 0.5), (0.0, 1.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.0)]
    assert len(weight_grid(2, 0.1)) == 65  # 66 pairs with sum <= 1, less (0, 0)
    with pytest.raises(ValueError, match="must divide 1"):
        weight_grid(2, 0.3)


def test_a_zero_weight_leaves_its_reranker_out_and_no_weight_keeps_the_first_stage() -> None:
    first = [Candidate(Document(f"d{i}", "", "text"), float(9 - i)) for i in range(4)]
    up, down = [0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]
    assert fused_ranking(first, [up, down], Setting(4, (1.0, 0.0))) == ["d3", "d2", "d1", "d0"]
    assert fused_ranking(first, [up, down], Setting(4, (0.0, 1.0))) == ["d0", "d1", "d2", "d3"]
    assert fused_ranking(first, [up, down], Setting(2, (1.0, 0.0))) == ["d1", "d0", "d2", "d3"]


def test_the_choice_is_estimated_on_folds_it_was_not_chosen_on() -> None:
    queries = [f"q{i:02d}" for i in range(10)]
    first = dict.fromkeys(queries, 0.5)
    steady = Setting(10, (0.5,))
    lucky = Setting(10, (1.0,))  # wins overall only through one query
    grid = {
        steady: dict.fromkeys(queries, 0.6),
        lucky: {q: (1.0 if q == "q03" else 0.58) for q in queries},
    }
    report = choose(first, grid, seed=13)
    assert report["best"] == {"depth": 10, "weights": [1.0], "ndcg@10": 0.622}
    # The fold holding q03 chooses the steady setting, and it is scored there: the estimate is below the best.
    assert report["cross_validated_ndcg@10"] < 0.622
    assert {"depth": 10, "weights": [0.5]} in report["chosen_per_fold"]
