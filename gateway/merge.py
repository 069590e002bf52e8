"""Pure ranking functions of the gateway: shard merge, reciprocal rank fusion, post-rerank order, snippets.

Every function here is deterministic: equal scores are broken by doc_id ascending, so a query answered by
N shards ranks exactly like the same query answered by one index over the same corpus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from search_common.documents import Candidate, Document
from search_common.ranking import order_key

RRF_K = 60
Fusion = Literal["none", "rrf", "learned"]
FUSIONS: tuple[Fusion, ...] = ("none", "rrf", "learned")


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[Candidate]],
    *,
    k: int = RRF_K,
    limit: int | None = None,
) -> list[Candidate]:
    """Fuses ranked lists with RRF: score(d) = sum over lists of 1 / (k + rank_d), rank 1-based.

    Lists are assumed best first and deduplicated (as `merge_shards` returns them). The fused candidates carry
    the fused score; ties are broken by doc_id ascending. `limit` cuts the result (None keeps the union).
    """
    if k <= 0:
        raise ValueError(f"RRF constant must be positive, got {k}")
    scores: dict[str, float] = {}
    documents: dict[str, Document] = {}
    for name in sorted(rankings):
        for rank, candidate in enumerate(rankings[name], start=1):
            doc_id = candidate.document.doc_id
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
            documents.setdefault(doc_id, candidate.document)
    fused = sorted((Candidate(documents[doc_id], score) for doc_id, score in scores.items()), key=order_key)
    return fused if limit is None else fused[:limit]


@dataclass(frozen=True, slots=True)
class RankedCandidate:
    """A candidate in its final position, with the scores that put it there."""

    document: Document
    score: float
    retrieval_score: float
    rerank_score: float | None


def first_stage_order(candidates: Sequence[Candidate]) -> list[RankedCandidate]:
    """The final list when nothing was reranked: first-stage order and scores."""
    return [RankedCandidate(c.document, c.score, c.score, None) for c in candidates]


def rerank_order(
    candidates: Sequence[Candidate],
    rerank_scores: Sequence[float],
    *,
    fusion: Fusion = "none",
    fusion_weight: float = 1.0,
    learned_scores: Sequence[float] | None = None,
    more_rerankers: Sequence[tuple[Sequence[float], float]] = (),
    k: int = RRF_K,
) -> list[RankedCandidate]:
    """Orders candidates after the reranker scored the first `len(rerank_scores)` of them.

    The reranked head is ordered by its final score: the rerank score itself (`fusion="none"`),
    `w / (k + rerank_rank) + (1 - w) / (k + first_stage_rank)` (`fusion="rrf"`, w = fusion_weight in [0, 1]),
    or a learned ranker's score of each head candidate (`fusion="learned"`, `learned_scores`, computed by
    `gateway.learned_fusion`). Ties keep first-stage order. The rest follow in first-stage order with their
    first-stage score, so the list is never shorter than the input and no score threshold ever drops a
    candidate.

    `more_rerankers` holds further rerankers' (scores of the same head, RRF weight), for `fusion="rrf"`
    only: each adds `w_i / (k + its rank)`, and the first stage keeps what the weights leave,
    `1 - w - sum(w_i)`, which must not be negative.
    """
    depth = len(rerank_scores)
    if depth > len(candidates):
        raise ValueError(f"{depth} rerank scores for {len(candidates)} candidates")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
    if more_rerankers and fusion != "rrf":
        raise ValueError("more than one reranker's scores are fused by fusion='rrf' only")
    weights = [fusion_weight, *(weight for _, weight in more_rerankers)]
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise ValueError(f"fusion weights must be within [0, 1], got {weights}")
    first_stage_weight = 1.0 - sum(weights)
    if first_stage_weight < -1e-9:
        raise ValueError(f"fusion weights must sum to at most 1, got {weights}")
    if (fusion == "learned") != (learned_scores is not None):
        raise ValueError("learned_scores go with fusion='learned', and only with it")
    if any(len(scores) != depth for scores, _ in more_rerankers):
        raise ValueError(f"every reranker must score the same head of {depth}")
    head = list(range(depth))
    if fusion == "none":
        final = {i: float(rerank_scores[i]) for i in head}
    elif learned_scores is not None:
        if len(learned_scores) != depth:
            raise ValueError(f"{len(learned_scores)} learned scores for a head of {depth}")
        final = {i: float(learned_scores[i]) for i in head}
    else:
        final = {i: max(first_stage_weight, 0.0) / (k + i + 1) for i in head}
        for scores, weight in [(rerank_scores, fusion_weight), *more_rerankers]:
            by_score = sorted(head, key=lambda i: (-scores[i], i))  # ties keep first-stage order
            for rank, i in enumerate(by_score, start=1):
                final[i] += weight / (k + rank)
    ordered = sorted(head, key=lambda i: (-final[i], i))
    result = [
        RankedCandidate(candidates[i].document, final[i], candidates[i].score, float(rerank_scores[i]))
        for i in ordered
    ]
    result.extend(first_stage_order(candidates[depth:]))
    return result


def snippet(text: str, max_chars: int = 240) -> str:
    """The start of a text, whitespace collapsed, cut at a word boundary with an ellipsis when shortened."""
    if max_chars <= 0:
        raise ValueError(f"snippet length must be positive, got {max_chars}")
    flat = " ".join(text.split())
    if len(flat) <= max_chars:
        return flat
    cut = flat[: max_chars + 1]
    space = cut.rfind(" ")
    head = cut[:space] if space > 0 else flat[:max_chars]
    return head.rstrip(" ,;:.-") + "…"
