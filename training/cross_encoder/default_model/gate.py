"""The publish gate: held-out pseudo-queries ranked by BM25 alone against BM25 re-ranked by the exported
model (nDCG@10 at several fusion weights)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from search_common.documents import Document
from training.cross_encoder.default_model.pseudo_queries import PseudoQuery, appears_in
from training.cross_encoder.default_model.recipe import EVAL_WEIGHTS, DefaultModelError

logger = logging.getLogger(__name__)


# Scores one query against candidate texts (higher is better), as a serving runtime does.
QueryScorer = Callable[[str, list[str]], npt.NDArray[np.float32]]


def evaluate_artifact(
    artifact: Path,
    held: Sequence[PseudoQuery],
    ranked: Mapping[str, Sequence[str]],
    documents: Mapping[str, Document],
    *,
    depth: int,
    progress: bool,
    first_stage: str = "bm25 (masked corpus)",
) -> dict[str, Any]:
    """`evaluate_scorer` with the exported cross-encoder (int8 ONNX), loaded only once the held-out queries
    pass the leak check."""
    from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime

    loaded: list[CrossEncoderRuntime] = []

    def score(query: str, texts: list[str]) -> npt.NDArray[np.float32]:
        if not loaded:
            loaded.append(CrossEncoderRuntime.load(artifact))
        return loaded[0].score(query, texts)

    return evaluate_scorer(
        score, held, ranked, documents,
        depth=depth, progress=progress, first_stage=first_stage, backend="onnx-int8",
    )  # fmt: skip


def evaluate_scorer(
    score: QueryScorer,
    held: Sequence[PseudoQuery],
    ranked: Mapping[str, Sequence[str]],
    documents: Mapping[str, Document],
    *,
    depth: int,
    progress: bool,
    backend: str,
    first_stage: str = "bm25 (masked corpus)",
) -> dict[str, Any]:
    """Held-out nDCG@10: first stage alone, re-ranked by `score`, and RRF-fused.

    Raises:
        DefaultModelError: a held-out query appears verbatim in a field of its positive; such a gate
            measures string matching and would publish a model that loses on real queries.
    """
    leaking = [q.query_id for q in held if appears_in(q.text, documents[q.doc_id])]
    if leaking:
        raise DefaultModelError(
            f"{len(leaking)} held-out queries appear verbatim in their positive (e.g. {leaking[0]}); "
            "the gate would measure string matching, not relevance"
        )
    from training.cross_encoder.evaluate import rerank_report

    started = time.perf_counter()
    scores: dict[str, list[float]] = {}
    for query in tqdm(held, desc="held-out evaluation", unit="query", disable=not progress, mininterval=5):
        ids = list(ranked.get(query.query_id, ()))[:depth]
        texts = [documents[d].model_text() for d in ids]
        values = score(query.text, texts)
        scores[query.query_id] = [float(v) for v in values]
    seconds = time.perf_counter() - started
    qrels = {q.query_id: {q.doc_id: 1} for q in held}
    report = rerank_report(scores, ranked, qrels, documents, depths=[depth], weights=EVAL_WEIGHTS)
    return {
        "queries": len(held),
        "query_kind": "first sentence of a held-out document; its document shown without that sentence",
        "first_stage": first_stage,
        "depth": depth,
        "first_stage_ndcg@10": report.first_stage,
        "reranked_ndcg@10": report.ce[depth],
        "fused_ndcg@10": {str(w): v for w, v in report.fused[depth].items()},
        "scoring_seconds": seconds,
        "backend": backend,
    }
