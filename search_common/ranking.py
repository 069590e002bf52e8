"""The exact merge of per-shard top-k lists, shared by the gateway (across addresses) and a retriever process
serving several shards (across its shards).

Equal scores are broken by doc_id ascending, so a query answered by N shards ranks exactly like the same query
answered by one index over the same corpus.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from search_common.documents import Candidate


def order_key(candidate: Candidate) -> tuple[float, str]:
    """Best score first, then doc_id ascending."""
    return (-candidate.score, candidate.document.doc_id)


def merge_shards(shard_candidates: Iterable[Sequence[Candidate]], k: int) -> list[Candidate]:
    """The exact global top-k of per-shard top-k lists.

    Each shard returns its own top-k; the global top-k is contained in their union, so sorting the union
    (score descending, doc_id ascending) and cutting at k is exact. A doc_id seen on several shards (a
    replicated document) is kept once, with its best score.
    """
    if k <= 0:
        return []
    best: dict[str, Candidate] = {}
    for candidates in shard_candidates:
        for candidate in candidates:
            seen = best.get(candidate.document.doc_id)
            if seen is None or candidate.score > seen.score:
                best[candidate.document.doc_id] = candidate
    return sorted(best.values(), key=order_key)[:k]
