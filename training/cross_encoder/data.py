"""Training groups for the cross-encoder: one positive and N mined negatives per group.

Sources:
- labelled pairs from `qrels/train.tsv` (train side of the seeded dev split only);
- pseudo-queries from the corpus itself (GPL-style domain adaptation): a document's title is the query and
  its abstract, shown without the title, the positive, so the model cannot match the title verbatim.

Negatives come from the project's first stage (hybrid ranking cached by `mine.py`), skipping the top few
ranks, where unjudged near-duplicates of the positive sit, and never taking a judged positive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from search_common.documents import Document

logger = logging.getLogger(__name__)

PSEUDO_PREFIX = "pq:"
MIN_TITLE_WORDS = 4


@dataclass(frozen=True, slots=True)
class Group:
    """One positive and its negatives; `title_free` shows documents without their titles."""

    query_id: str
    query: str
    positive: str
    negatives: tuple[str, ...]
    title_free: bool = False


def document_text(document: Document, *, title_free: bool) -> str:
    return document.text if title_free else document.model_text()


def sample_negatives(
    ranked: Sequence[str],
    positives: Iterable[str],
    *,
    count: int,
    skip_top: int,
    depth: int,
    rng: random.Random,
) -> list[str]:
    """Draws `count` negatives from first-stage ranks (skip_top, depth], never a positive.

    Falls back to deeper ranks when the window holds too few; returns fewer only when the list runs out.
    """
    if count < 0 or skip_top < 0 or depth <= skip_top:
        raise ValueError(f"sample_negatives: bad count/skip_top/depth {count}/{skip_top}/{depth}")
    banned = set(positives)
    window = [d for d in ranked[skip_top:depth] if d not in banned]
    if len(window) >= count:
        return rng.sample(window, count)
    deeper = [d for d in ranked[depth:] if d not in banned]
    return window + deeper[: count - len(window)]


def labelled_groups(
    query_ids: Sequence[str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    candidates: Mapping[str, Sequence[str]],
    *,
    negatives: int,
    skip_top: int,
    depth: int,
    rng: random.Random,
) -> list[Group]:
    """One group per judged (query, positive) pair of the given queries."""
    groups: list[Group] = []
    for qid in query_ids:
        positives = sorted(d for d, rel in qrels.get(qid, {}).items() if rel > 0)
        ranked = candidates.get(qid, ())
        for positive in positives:
            negs = sample_negatives(
                ranked, positives, count=negatives, skip_top=skip_top, depth=depth, rng=rng
            )
            if len(negs) == negatives:
                groups.append(Group(qid, queries[qid], positive, tuple(negs)))
    return groups


def pseudo_query_ids(documents: Sequence[Document], limit: int, *, seed: int) -> list[str]:
    """Ids (`pq:<doc_id>`) of up to `limit` documents whose titles make usable queries, seeded choice."""
    usable = sorted(d.doc_id for d in documents if len(d.title.split()) >= MIN_TITLE_WORDS and d.text.strip())
    random.Random(seed).shuffle(usable)
    return [PSEUDO_PREFIX + d for d in sorted(usable[:limit])]


def pseudo_groups(
    pseudo_ids: Sequence[str],
    documents: Mapping[str, Document],
    candidates: Mapping[str, Sequence[str]],
    *,
    negatives: int,
    skip_top: int,
    depth: int,
    rng: random.Random,
    exclude_docs: frozenset[str] = frozenset(),
) -> list[Group]:
    """Title -> own abstract groups; documents in `exclude_docs` (judged for dev queries) are never used."""
    groups: list[Group] = []
    for pid in pseudo_ids:
        doc_id = pid.removeprefix(PSEUDO_PREFIX)
        if doc_id in exclude_docs:
            continue
        ranked = [d for d in candidates.get(pid, ()) if d not in exclude_docs]
        negs = sample_negatives(ranked, [doc_id], count=negatives, skip_top=skip_top, depth=depth, rng=rng)
        if len(negs) == negatives:
            groups.append(Group(pid, documents[doc_id].title, doc_id, tuple(negs), title_free=True))
    return groups


def generated_groups(
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    *,
    negatives: int,
    skip_top: int,
    depth: int,
    rng: random.Random,
) -> list[Group]:
    """Generated query -> the document it was written for (shown whole), keyed `gq:<doc_id>`, with negatives
    from the first stage's ranking for that query."""
    groups: list[Group] = []
    for qid, text in queries.items():
        doc_id = qid.split(":", 1)[1]
        ranked = candidates.get(qid, ())
        negs = sample_negatives(ranked, [doc_id], count=negatives, skip_top=skip_top, depth=depth, rng=rng)
        if len(negs) == negatives:
            groups.append(Group(qid, text, doc_id, tuple(negs)))
    return groups


def groups_sha256(groups: Iterable[Group]) -> str:
    """Checksum of the exact training examples (ids and query text), in order."""
    digest = hashlib.sha256()
    for group in groups:
        digest.update(json.dumps(asdict(group), sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()
