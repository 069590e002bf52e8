"""Shard merge, reciprocal rank fusion, post-rerank order and snippets (gateway.merge)."""

from __future__ import annotations

import random

import pytest

from gateway.merge import (
    RankedCandidate,
    first_stage_order,
    reciprocal_rank_fusion,
    rerank_order,
    snippet,
)
from search_common.documents import Candidate, Document
from search_common.ranking import merge_shards


def _doc(i: int) -> Document:
    return Document(f"d{i:03d}", f"title {i}", f"text {i}")


def _cand(i: int, score: float) -> Candidate:
    return Candidate(_doc(i), score)


def _ids(candidates: list[Candidate]) -> list[str]:
    return [c.document.doc_id for c in candidates]


def test_merge_of_shard_top_k_equals_global_top_k() -> None:
    rng = random.Random(7)
    # Coarse scores so ties are common: the doc_id tie-break must make the merge exact anyway.
    everything = [_cand(i, float(rng.randint(0, 20))) for i in range(200)]
    reference = sorted(everything, key=lambda c: (-c.score, c.document.doc_id))
    for num_shards in (1, 2, 3, 7):
        shards = [everything[s::num_shards] for s in range(num_shards)]
        for k in (1, 5, 10, 50, 300):
            per_shard = [sorted(s, key=lambda c: (-c.score, c.document.doc_id))[:k] for s in shards]
            assert _ids(merge_shards(per_shard, k)) == _ids(reference[:k])


def test_merge_dedupes_keeping_best_score() -> None:
    merged = merge_shards([[_cand(1, 0.5), _cand(2, 0.4)], [_cand(1, 0.9)]], 10)
    assert [(c.document.doc_id, c.score) for c in merged] == [("d001", 0.9), ("d002", 0.4)]


def test_merge_with_no_k_or_no_shards() -> None:
    assert merge_shards([[_cand(1, 1.0)]], 0) == []
    assert merge_shards([], 5) == []


def test_rrf_scores_and_order() -> None:
    dense = [_cand(1, 0.9), _cand(2, 0.8), _cand(3, 0.7)]
    bm25 = [_cand(3, 12.0), _cand(1, 11.0), _cand(4, 2.0)]
    fused = reciprocal_rank_fusion({"dense": dense, "bm25": bm25})
    scores = {c.document.doc_id: c.score for c in fused}
    assert scores["d001"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["d003"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["d002"] == pytest.approx(1 / 62)
    assert scores["d004"] == pytest.approx(1 / 63)
    assert _ids(fused) == ["d001", "d003", "d002", "d004"]
    assert _ids(reciprocal_rank_fusion({"dense": dense, "bm25": bm25}, limit=2)) == ["d001", "d003"]


def test_rrf_ties_break_by_doc_id() -> None:
    fused = reciprocal_rank_fusion({"a": [_cand(2, 1.0)], "b": [_cand(1, 1.0)]})
    assert _ids(fused) == ["d001", "d002"]


def test_rrf_rejects_bad_constant() -> None:
    with pytest.raises(ValueError, match="positive"):
        reciprocal_rank_fusion({"a": [_cand(1, 1.0)]}, k=0)


def test_rerank_order_keeps_every_candidate_and_tail_order() -> None:
    first = [_cand(i, 10.0 - i) for i in range(6)]
    ranked = rerank_order(first, [0.1, 0.9, 0.5])
    assert [c.document.doc_id for c in ranked] == ["d001", "d002", "d000", "d003", "d004", "d005"]
    assert [c.rerank_score for c in ranked] == [0.9, 0.5, 0.1, None, None, None]
    assert [c.retrieval_score for c in ranked][:3] == [9.0, 8.0, 10.0]
    assert ranked[3].score == 7.0  # the tail keeps its first-stage score


def test_rerank_order_does_not_threshold_negative_scores() -> None:
    first = [_cand(i, 1.0) for i in range(3)]
    ranked = rerank_order(first, [-9.0, -1.0, -5.0])
    assert [c.document.doc_id for c in ranked] == ["d001", "d002", "d000"]


def test_rerank_order_rrf_fusion_blends_orders() -> None:
    first = [_cand(i, 10.0 - i) for i in range(3)]
    # weight 1: pure reranked order; weight 0: pure first-stage order
    assert _ids_r(rerank_order(first, [0.0, 0.0, 1.0], fusion="rrf", fusion_weight=1.0))[0] == "d002"
    assert _ids_r(rerank_order(first, [0.0, 0.0, 1.0], fusion="rrf", fusion_weight=0.0)) == [
        "d000",
        "d001",
        "d002",
    ]


def _ids_r(ranked: list[RankedCandidate]) -> list[str]:
    return [c.document.doc_id for c in ranked]


def test_rerank_order_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="scores for"):
        rerank_order([_cand(1, 1.0)], [0.1, 0.2])
    with pytest.raises(ValueError, match="fusion weight"):
        rerank_order([_cand(1, 1.0)], [0.1], fusion="rrf", fusion_weight=2.0)


def test_first_stage_order() -> None:
    ranked = first_stage_order([_cand(1, 2.0)])
    assert ranked[0].score == ranked[0].retrieval_score == 2.0 and ranked[0].rerank_score is None


def test_snippet_cuts_at_word_boundary() -> None:
    assert snippet("short  text\n here", 100) == "short text here"
    cut = snippet("alpha beta gamma delta", 12)
    assert cut == "alpha beta…"
    assert snippet("abcdefghijkl", 5) == "abcde…"
    with pytest.raises(ValueError):
        snippet("x", 0)


def test_rerank_order_fuses_several_rerankers_by_weighted_rrf() -> None:
    first = [_cand(i, float(10 - i)) for i in range(4)]  # first stage: d000, d001, d002, d003
    a = [0.0, 0.0, 1.0, 2.0]  # ranks d003, d002, d000, d001
    b = [0.0, 3.0, 2.0, 1.0]  # ranks d001, d002, d003, d000
    ranked = rerank_order(first, a, fusion="rrf", fusion_weight=0.3, more_rerankers=[(b, 0.5)])

    def expected(i: int, rank_a: int, rank_b: int) -> float:
        return 0.2 / (60 + i + 1) + 0.3 / (60 + rank_a) + 0.5 / (60 + rank_b)

    want = {"d000": expected(0, 3, 4), "d001": expected(1, 4, 1), "d002": expected(2, 2, 2),
            "d003": expected(3, 1, 3)}  # fmt: skip
    assert _ids_r(ranked) == sorted(want, key=lambda d: -want[d])
    assert [c.score for c in ranked] == pytest.approx(sorted(want.values(), reverse=True))
    assert {c.document.doc_id: c.rerank_score for c in ranked} == {
        "d000": 0.0, "d001": 0.0, "d002": 1.0, "d003": 2.0
    }  # fmt: skip  # the first reranker's score
    # One reranker at the same weight orders exactly as before the second was possible.
    alone = rerank_order(first, a, fusion="rrf", fusion_weight=0.3)
    assert [c.score for c in alone] == [
        c.score for c in rerank_order(first, a, fusion="rrf", fusion_weight=0.3, more_rerankers=[])
    ]
    with pytest.raises(ValueError, match="sum to at most 1"):
        rerank_order(first, a, fusion="rrf", fusion_weight=0.6, more_rerankers=[(b, 0.5)])
    with pytest.raises(ValueError, match="fused by fusion='rrf' only"):
        rerank_order(first, a, fusion="none", more_rerankers=[(b, 0.5)])
    with pytest.raises(ValueError, match="same head"):
        rerank_order(first, a, fusion="rrf", fusion_weight=0.3, more_rerankers=[(b[:3], 0.5)])
