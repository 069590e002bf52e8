"""The dev-split choice of pseudo-relevance feedback settings, and the refinement it evaluates."""

from __future__ import annotations

import numpy as np
import pytest

from training.bi_encoder.fit_prf import choose, main, refine_all


def test_choose_takes_the_best_recall_that_keeps_ndcg() -> None:
    grid = [
        {"docs": 10, "weight": 0.8, "ndcg@10": 0.67, "recall@100": 0.99},  # recall bought with ranking
        {"docs": 2, "weight": 0.5, "ndcg@10": 0.71, "recall@100": 0.97},
        {"docs": 3, "weight": 0.5, "ndcg@10": 0.70, "recall@100": 0.97},
        {"docs": 1, "weight": 0.1, "ndcg@10": 0.72, "recall@100": 0.96},
    ]
    assert choose(grid, baseline_ndcg=0.70) == grid[1]
    assert choose(grid, baseline_ndcg=0.73) is None


def test_refine_all_uses_each_querys_own_top_documents() -> None:
    docs = np.eye(3, dtype=np.float32)
    queries = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    refined = refine_all(queries, docs, [[2, 0], [1, 2]], docs=1, weight=1.0)
    np.testing.assert_allclose(refined[0], [2**-0.5, 0.0, 2**-0.5], rtol=1e-6)
    np.testing.assert_allclose(refined[1], [0.0, 1.0, 0.0], rtol=1e-6)


def test_a_missing_model_directory_is_a_cli_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--dataset", "x", "--model", "/nonexistent/model"])
    assert "is not a directory" in capsys.readouterr().err
