"""A small real learned-fusion artifact for tests: LightGBM fitted on synthetic heads with an obvious rule.

In every synthetic head the relevant document is the one the first stage put last, so the fitted model
reverses the head: an order no other fusion produces, which makes it plain in a test when the learned model
(and not the reranker or the first stage) decided.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import cast

from gateway.variants import FirstStage
from search_common.documents import Candidate, Document
from training.fusion.fit_learned import QueryEvidence, publish, train_ranker

HEAD = 5


def last_is_relevant_evidence(
    queries: int = 60, seed: int = 13
) -> tuple[dict[str, QueryEvidence], dict[str, dict[str, int]]]:
    """Synthetic evidence and qrels in which the first stage's last head document is the relevant one."""
    rng = random.Random(seed)
    evidence: dict[str, QueryEvidence] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(queries):
        docs = [Candidate(Document(f"q{q}-d{i}", "", f"text {i}"), 1.0 - i / 10) for i in range(HEAD)]
        bm25 = sorted(docs, key=lambda _: rng.random())
        lists = {"dense": docs, "bm25": [Candidate(c.document, 10.0 - i) for i, c in enumerate(bm25)]}
        evidence[f"q{q}"] = QueryEvidence(lists, docs, [rng.gauss(0.0, 1.0) for _ in docs])
        qrels[f"q{q}"] = {docs[-1].document.doc_id: 1}
    return evidence, qrels


def reversing_fusion_artifact(root: Path, *, name: str = "learned-test", first_stage: str = "dense") -> Path:
    """Fits the synthetic rule and publishes it under root; returns the version directory."""
    evidence, qrels = last_is_relevant_evidence()
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
