"""Training examples for the bi-encoder: (query, positive[, hard negatives]) from SciFact train qrels.

Only the train side of the seeded dev split (`training.common.splits`) is used; the dev queries are kept
for choosing between recipes. Batches for in-batch negatives never hold the same query or the same
positive document twice, since either would turn a true positive into a "negative" of another row.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import numpy.typing as npt

from search_common.documents import Document
from training.cross_encoder.data import PSEUDO_PREFIX, pseudo_query_ids

Teacher = Callable[[str, Sequence[str]], npt.NDArray[np.float32]]
"""Scores texts against a query, one float per text in input order (`CrossEncoderRuntime.score`)."""

__all__ = [
    "Example",
    "Teacher",
    "attach_hard_negatives",
    "examples_sha256",
    "filter_false_negatives",
    "in_batch_safe_batches",
    "positive_examples",
    "pseudo_query_examples",
    "sentence_query_examples",
]

SENTENCE_PREFIX = "ict:"
# A sentence ends at . ! or ? followed by a capital letter or digit ("et al. found" stays whole).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
MIN_SENTENCE_WORDS, MAX_SENTENCE_WORDS, MIN_SENTENCES = 6, 60, 3


@dataclass(frozen=True, slots=True)
class Example:
    """One query, one judged positive document, optional hard negatives and the teacher's margins.

    `teacher_margins[i]` is the cross-encoder's score of the positive minus its score of `negative_ids[i]`.
    `title_free` (pseudo-query examples, whose query is the positive's own title) shows every document of
    the example without its title, so the model cannot match the title verbatim. `cut_text` (sentence
    queries) is removed from the documents shown, for the same reason.
    """

    query_id: str
    query: str
    positive_id: str
    negative_ids: tuple[str, ...] = ()
    teacher_margins: tuple[float, ...] = ()
    title_free: bool = False
    cut_text: str = ""

    def document_text(self, document: Document) -> str:
        text = document.text if self.title_free else document.model_text()
        return " ".join(text.replace(self.cut_text, " ").split()) if self.cut_text else text


def positive_examples(
    query_ids: Sequence[str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    documents: Mapping[str, Document],
) -> list[Example]:
    """One example per judged (query, relevant document) pair of the given queries, in id order.

    Pairs whose document is missing from the corpus are skipped.

    Raises:
        ValueError: a query id has no text.
    """
    examples: list[Example] = []
    for qid in sorted(query_ids):
        if qid not in queries:
            raise ValueError(f"positive_examples: query {qid!r} has no text")
        for doc_id in sorted(d for d, rel in qrels.get(qid, {}).items() if rel > 0):
            if doc_id in documents:
                examples.append(Example(qid, queries[qid], doc_id))
    return examples


def pseudo_query_examples(
    documents: Mapping[str, Document], limit: int, *, seed: int, exclude_docs: frozenset[str] = frozenset()
) -> list[Example]:
    """Up to `limit` title -> own abstract examples (GPL-style domain adaptation from the corpus itself).

    The pseudo-query id is `pq:<doc_id>`, the ids the first-stage mining cache uses for titles
    (`training.cross_encoder.mine.pseudo_queries`), so hard negatives can be mined for them too. Documents in
    `exclude_docs` (those judged for held-out queries) are never used, so the dev figures stay honest.
    """
    usable = [d for d in documents.values() if d.doc_id not in exclude_docs]
    chosen = pseudo_query_ids(usable, limit, seed=seed)
    examples = []
    for pid in chosen:
        doc_id = pid.removeprefix(PSEUDO_PREFIX)
        examples.append(Example(pid, documents[doc_id].title, doc_id, title_free=True))
    return examples


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def sentence_query_examples(
    documents: Mapping[str, Document], limit: int, *, seed: int, exclude_docs: frozenset[str] = frozenset()
) -> list[Example]:
    """Up to `limit` (abstract sentence -> rest of the abstract) examples: the Inverse Cloze Task.

    The sentence is the abstract's last one of usable length: most abstracts end on their conclusion,
    the kind of statement SciFact's claims are written from, which titles are not. It is cut from the
    positive, so the model has to match its meaning rather than its words. Ids are `ict:<doc_id>`;
    documents in `exclude_docs` (judged for held-out queries) are never used.
    """
    usable: list[tuple[str, str]] = []
    for doc_id in sorted(documents):
        if doc_id in exclude_docs:
            continue
        sentences = split_sentences(documents[doc_id].text)
        if len(sentences) < MIN_SENTENCES:
            continue
        fitting = [s for s in sentences if MIN_SENTENCE_WORDS <= len(s.split()) <= MAX_SENTENCE_WORDS]
        if fitting:
            usable.append((doc_id, fitting[-1]))
    random.Random(seed).shuffle(usable)
    return [
        Example(SENTENCE_PREFIX + doc_id, sentence, doc_id, cut_text=sentence)
        for doc_id, sentence in sorted(usable[:limit])
    ]


def in_batch_safe_batches(
    examples: Sequence[Example], batch_size: int, rng: random.Random
) -> list[list[Example]]:
    """Shuffles and packs examples into batches where no query id and no positive id repeats.

    Greedy: each example goes to the first open batch without a clash; every example is used once.

    Raises:
        ValueError: batch_size is not positive.
    """
    if batch_size <= 0:
        raise ValueError(f"in_batch_safe_batches: batch_size must be positive, got {batch_size}")
    order = list(examples)
    rng.shuffle(order)
    batches: list[list[Example]] = []
    keys: list[set[str]] = []
    for example in order:
        mine = {
            "q:" + example.query_id,
            "d:" + example.positive_id,
            *("d:" + n for n in example.negative_ids),
        }
        for batch, used in zip(batches, keys, strict=True):
            if len(batch) < batch_size and not (mine & used):
                batch.append(example)
                used |= mine
                break
        else:
            batches.append([example])
            keys.append(set(mine))
    return batches


def filter_false_negatives(
    candidates: Sequence[str],
    positives: Iterable[str],
    teacher_scores: Mapping[str, float],
    positive_score: float,
    *,
    margin: float,
) -> list[str]:
    """Keeps mined candidates the teacher (cross-encoder) scores clearly below the positive.

    A candidate is dropped when it is judged relevant, has no teacher score, or scores above
    `positive_score - margin` (a likely unjudged relevant document, i.e. a false negative).
    """
    banned = set(positives)
    return [
        d
        for d in candidates
        if d not in banned and d in teacher_scores and teacher_scores[d] <= positive_score - margin
    ]


def attach_hard_negatives(
    examples: Iterable[Example],
    candidates: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    documents: Mapping[str, Document],
    teacher: Teacher,
    *,
    count: int,
    skip_top: int,
    depth: int,
    margin: float,
    rng: random.Random,
) -> list[Example]:
    """Adds `count` mined negatives (and their teacher margins) to each example.

    Negatives come from first-stage ranks (skip_top, depth] of the query, never a judged positive, and only
    those the teacher scores at least `margin` below the example's positive (false negatives dropped); a
    seeded sample of `count` of them is kept. Examples left with fewer than `count` are dropped.

    Raises:
        ValueError: count < 1, skip_top < 0 or depth <= skip_top.
    """
    if count < 1 or skip_top < 0 or depth <= skip_top:
        raise ValueError(f"attach_hard_negatives: bad count/skip_top/depth {count}/{skip_top}/{depth}")
    out: list[Example] = []
    for example in examples:
        # A pseudo-query has no qrels: its own document is its only known positive.
        judged = [d for d, rel in qrels.get(example.query_id, {}).items() if rel > 0]
        positives = [*judged, example.positive_id]
        banned = set(positives)
        window = [d for d in candidates.get(example.query_id, ())[skip_top:depth] if d not in banned]
        window = [d for d in window if d in documents]
        if len(window) < count:
            continue
        texts = [example.document_text(documents[d]) for d in (example.positive_id, *window)]
        scores = [float(s) for s in teacher(example.query, texts)]
        by_id = dict(zip(window, scores[1:], strict=True))
        kept = filter_false_negatives(window, positives, by_id, scores[0], margin=margin)
        if len(kept) < count:
            continue
        chosen = rng.sample(kept, count)
        out.append(
            replace(
                example,
                negative_ids=tuple(chosen),
                teacher_margins=tuple(scores[0] - by_id[d] for d in chosen),
            )
        )
    return out


def examples_sha256(examples: Iterable[Example]) -> str:
    """Checksum of the exact training examples (ids and query text), in order.

    An empty `cut_text` is left out, so examples without one hash as they did before the field existed and
    manifests written earlier stay reproducible.
    """
    digest = hashlib.sha256()
    for example in examples:
        fields = asdict(example)
        if not fields["cut_text"]:
            del fields["cut_text"]
        digest.update(json.dumps(fields, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()
