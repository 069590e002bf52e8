"""A sanity check against a published baseline: BM25 on SciFact test (Anserini flat: nDCG@10 0.679).

The test split is used to measure, never to tune: BM25's parameters were chosen on a dev split of train.
"""

from __future__ import annotations

from pathlib import Path

import ir_measures
import pytest
from ir_measures import nDCG

from corpora.beir import BeirDataset
from retriever_service.bm25 import Bm25Retriever
from retriever_service.bootstrap import load_index
from retriever_service.build_index import build_index


@pytest.mark.slow
def test_bm25_scifact_ndcg_matches_published_baseline(scifact_root: Path, tmp_path: Path) -> None:
    dataset = BeirDataset(scifact_root)
    out = build_index(dataset.corpus_path, tmp_path / "scifact-bm25", kind="bm25")
    (retriever,) = load_index(out)
    assert isinstance(retriever, Bm25Retriever)
    queries, qrels = dataset.split_queries("test")
    tokenized = [retriever._tokenizer([q.text])[0] for q in queries]
    ranked = retriever.search_tokens(tokenized, 10)
    run = [
        ir_measures.ScoredDoc(q.query_id, c.document.doc_id, c.score)
        for q, candidates in zip(queries, ranked, strict=True)
        for c in candidates
    ]
    judged = [ir_measures.Qrel(q, d, r) for q, docs in qrels.items() for d, r in docs.items()]
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], judged, run)[nDCG @ 10]
    assert 0.65 <= ndcg <= 0.70, f"BM25 SciFact test nDCG@10 {ndcg:.3f} is off the published 0.665-0.679"
