"""Small real learned-fusion artifacts for tests: LightGBM fitted on synthetic heads with an obvious rule.

`best_bm25` marks relevant the head document BM25 ranked first, while the first stage follows the dense
order and the reranker's scores are noise: only a model that reads the BM25 features finds it.
`best_reranked` marks relevant the document the reranker scored highest: a model of that rule puts the
reranker's favourite first however the first stage ordered the head.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal, cast

from gateway.variants import FirstStage
from search_common.documents import Candidate, Document
from training.fusion.evidence import QueryEvidence
from training.fusion.fit_learned import publish, train_ranker

HEAD = 5
Rule = Literal["best_bm25", "best_reranked"]


def synthetic_evidence(
    rule: Rule, queries: int = 60, seed: int = 13
) -> tuple[dict[str, QueryEvidence], dict[str, dict[str, int]]]:
    """Synthetic evidence per query, and qrels marking the one document the rule calls relevant."""
    rng = random.Random(seed)
    evidence: dict[str, QueryEvidence] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(queries):
        docs = [Candidate(Document(f"q{q}-d{i}", "", f"text {i}"), 1.0 - i / 10) for i in range(HEAD)]
        bm25 = sorted(docs, key=lambda _: rng.random())
        lists = {"dense": docs, "bm25": [Candidate(c.document, 10.0 - i) for i, c in enumerate(bm25)]}
        rerank = [rng.gauss(0.0, 1.0) for _ in docs]
        evidence[f"q{q}"] = QueryEvidence(lists, docs, rerank)
        relevant = bm25[0] if rule == "best_bm25" else docs[max(range(HEAD), key=lambda i: rerank[i])]
        qrels[f"q{q}"] = {relevant.document.doc_id: 1}
    return evidence, qrels


def fusion_artifact(root: Path, *, name: str = "learned-test", first_stage: str = "dense") -> Path:
    """Fits the `best_reranked` rule and publishes it under root; returns the version directory."""
    evidence, qrels = synthetic_evidence("best_reranked")
    model = train_ranker(evidence, qrels, sorted(evidence), HEAD, 50, seed=13)
    return publish(
        root,
        model,
        name=name,
        first_stage=cast(FirstStage, first_stage),
        depth=HEAD,
        rounds=50,
        reranker=("cross-encoder-minilm", "v1"),
        provenance={"fitted_on": {"dataset": "synthetic"}},
    )
