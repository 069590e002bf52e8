"""Re-ranking evaluation of a cross-encoder over cached first-stage candidates.

Scores each query's top `depth` hybrid candidates once, then reports nDCG@10 for the first stage alone, the
cross-encoder alone and the cross-encoder fused with the first-stage order by the gateway's own
`rerank_order(fusion="rrf", fusion_weight=w)`, for every depth up to the scored one and every weight in a
grid, so the depth and weight are fitted on dev queries and only then applied to test.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from gateway.merge import rerank_order
from search_common.documents import Candidate, Document
from training.common.metrics import ndcg_at_10, ranking_to_run
from training.cross_encoder.model import CrossEncoder

logger = logging.getLogger(__name__)

WEIGHTS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass
class RerankReport:
    """nDCG@10 figures of one evaluation; keys of `ce` and `fused` are depths, of `fused[d]` weights."""

    first_stage: float
    ce: dict[int, float] = field(default_factory=dict)
    fused: dict[int, dict[float, float]] = field(default_factory=dict)

    def best_fused(self) -> tuple[int, float, float]:
        """(depth, weight, nDCG@10) of the best fused setting; ties go to the shallower depth and weight."""
        best = max(
            ((d, w, v) for d, by_w in self.fused.items() for w, v in by_w.items()),
            key=lambda t: (round(t[2], 6), -t[0], -t[1]),
        )
        return best

    def as_dict(self) -> dict[str, object]:
        return {
            "first_stage": self.first_stage,
            "ce": {str(d): v for d, v in self.ce.items()},
            "fused": {str(d): {str(w): v for w, v in by_w.items()} for d, by_w in self.fused.items()},
        }


def score_pairs(
    model: CrossEncoder,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    *,
    max_length: int,
    batch_size: int = 32,
    desc: str = "scoring",
) -> npt.NDArray[np.float32]:
    """Logits for (query, document) pairs in input order; batches are formed longest-first to cut padding."""
    model.eval()
    lengths = [len(q) + len(d) for q, d in pairs]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    scores = np.empty(len(pairs), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch", mininterval=10):
            idx = order[start : start + batch_size]
            batch = tokenizer(
                [pairs[i][0] for i in idx],
                [pairs[i][1] for i in idx],
                truncation="only_second",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            scores[idx] = logits[:, 0].float().numpy()
    return scores


def rerank_report(
    ce_scores: Mapping[str, Sequence[float]],
    candidates: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    documents: Mapping[str, Document],
    *,
    depths: Sequence[int],
    weights: Sequence[float] = WEIGHTS,
) -> RerankReport:
    """nDCG@10 of first stage, CE alone and fused, from CE scores of each query's top candidates."""
    query_ids = sorted(qrels)
    first = ranking_to_run({q: list(candidates.get(q, ())) for q in query_ids})
    report = RerankReport(first_stage=ndcg_at_10(qrels, first))
    for depth in depths:
        report.fused[depth] = {}
        for fusion, grid in (("none", (1.0,)), ("rrf", tuple(weights))):
            for weight in grid:
                ranked: dict[str, list[str]] = {}
                for q in query_ids:
                    ids = list(candidates.get(q, ()))
                    cands = [Candidate(documents[d], float(-i)) for i, d in enumerate(ids)]
                    head = list(ce_scores[q][: min(depth, len(ids))])
                    order = rerank_order(cands, head, fusion=fusion, fusion_weight=weight)  # type: ignore[arg-type]
                    ranked[q] = [c.document.doc_id for c in order]
                value = ndcg_at_10(qrels, ranking_to_run(ranked))
                if fusion == "none":
                    report.ce[depth] = value
                else:
                    report.fused[depth][weight] = value
    return report


def score_candidates(
    model: CrossEncoder,
    tokenizer: PreTrainedTokenizerBase,
    query_ids: Sequence[str],
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    documents: Mapping[str, Document],
    *,
    depth: int,
    max_length: int,
    batch_size: int = 32,
) -> dict[str, list[float]]:
    """CE logits for each query's top-`depth` candidates, in first-stage order."""
    pairs: list[tuple[str, str]] = []
    spans: list[tuple[str, int, int]] = []
    for q in query_ids:
        ids = list(candidates.get(q, ()))[:depth]
        spans.append((q, len(pairs), len(pairs) + len(ids)))
        pairs.extend((queries[q], documents[d].model_text()) for d in ids)
    scores = score_pairs(model, tokenizer, pairs, max_length=max_length, batch_size=batch_size)
    return {q: [float(s) for s in scores[a:b]] for q, a, b in spans}
