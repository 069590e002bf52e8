"""Ranking metrics over plain dicts, via ir_measures (the same definitions the evaluation scripts use)."""

from __future__ import annotations

from collections.abc import Mapping

import ir_measures
from ir_measures import nDCG

NDCG_AT_10 = nDCG @ 10


def ndcg_at_10(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]) -> float:
    """Mean nDCG@10 over the judged queries; a judged query missing from the run counts as 0."""
    judged = {q: dict(docs) for q, docs in qrels.items()}
    scored = {q: dict(run.get(q, {})) for q in judged}
    if not judged:
        raise ValueError("ndcg_at_10: no judged queries")
    per_query = {m.query_id: m.value for m in ir_measures.iter_calc([NDCG_AT_10], judged, scored)}
    return float(sum(per_query.get(q, 0.0) for q in judged) / len(judged))


def ranking_to_run(ranked_ids: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
    """Turns ranked doc-id lists into a run whose scores reproduce the order (ties impossible)."""
    return {q: {d: float(len(ids) - i) for i, d in enumerate(ids)} for q, ids in ranked_ids.items()}
