"""The re-ranking report: CE alone, fused with the first stage, and the best-setting choice."""

from __future__ import annotations

import pytest

from search_common.documents import Document
from training.cross_encoder.evaluate import RerankReport, rerank_report


def test_report_ce_and_fused() -> None:
    docs = {d: Document(d, "", d) for d in ("a", "b", "c")}
    candidates = {"q": ["a", "b", "c"]}
    qrels = {"q": {"c": 1}}
    scores = {"q": [0.0, 1.0, 2.0]}  # the CE puts c first
    report = rerank_report(scores, candidates, qrels, docs, depths=[1, 3], weights=[0.0, 1.0])
    assert report.first_stage == pytest.approx(0.5)
    assert report.ce[3] == pytest.approx(1.0)
    assert report.ce[1] == pytest.approx(0.5)  # depth 1 re-ranks only 'a'
    assert report.fused[3][0.0] == pytest.approx(0.5)  # weight 0: first-stage order
    assert report.fused[3][1.0] == pytest.approx(1.0)
    depth, weight, value = report.best_fused()
    assert (depth, weight) == (3, 1.0)
    assert value == pytest.approx(1.0)
    assert report.as_dict()["ce"] == {"1": pytest.approx(0.5), "3": pytest.approx(1.0)}


def test_best_fused_prefers_shallower_and_lighter_on_ties() -> None:
    report = RerankReport(first_stage=0.6, fused={10: {0.2: 0.7, 0.4: 0.7}, 20: {0.2: 0.7}})
    depth, weight, _ = report.best_fused()
    assert depth == 10 and weight == 0.2
