"""Few-shot prompts that make a base language model write a query for a document (InPars, Promptagator).

A base model continues text, so the prompt is a run of "Document: ... / Query: ..." pairs from the
collection's own train judgements, then the target document and an open "Query:". The examples come first and
never change within a run, so a runtime that keeps its key/value cache (llama.cpp does) evaluates them once
and each document costs only its own tokens.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from search_common.documents import Document
from training.query_generation.filters import acceptable

# Bump when the template changes: it is part of every cache key.
TEMPLATE_VERSION = "fewshot-v1"
EXAMPLE_WORDS = 60
TARGET_WORDS = 160
QUERY_FIELD = "Query:"


@dataclass(frozen=True, slots=True)
class Example:
    query: str
    document: Document


def clip_words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit]) + (" ..." if len(words) > limit else "")


def _render(document: Document, limit: int) -> str:
    body = clip_words(document.model_text(), limit)
    return f"Document: {body}\n"


def choose_examples(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    documents: Mapping[str, Document],
    query_ids: Sequence[str],
    *,
    count: int,
    seed: int,
) -> list[Example]:
    """`count` seeded (query, judged positive) pairs drawn from `query_ids` (the train side only).

    Only pairs that pass the filter written queries must pass are shown: a small base model imitates its
    examples, and one whose query is not about its document teaches it to write queries about nothing.
    """
    usable = sorted(q for q in query_ids if _positive(q, queries, qrels, documents) is not None)
    if len(usable) < count:
        raise ValueError(f"{count} few-shot examples asked for, {len(usable)} judged train queries usable")
    rng = random.Random(seed)
    examples: list[Example] = []
    for qid in rng.sample(usable, count):
        positive = _positive(qid, queries, qrels, documents)
        assert positive is not None
        examples.append(Example(queries[qid], positive))
    return examples


def _positive(
    qid: str,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    documents: Mapping[str, Document],
) -> Document | None:
    """The query's first judged positive that it is a usable example for, if any."""
    for doc_id in sorted(d for d, rel in qrels.get(qid, {}).items() if rel > 0 and d in documents):
        if qid in queries and acceptable(queries[qid], documents[doc_id]):
            return documents[doc_id]
    return None


@dataclass(frozen=True, slots=True)
class FewShotPrompt:
    """The fixed examples' text, then one document's; `key` names the prefix in cache keys."""

    prefix: str

    @classmethod
    def from_examples(cls, examples: Sequence[Example]) -> FewShotPrompt:
        if not examples:
            raise ValueError("a few-shot prompt needs at least one example")
        shots = "".join(f"{_render(e.document, EXAMPLE_WORDS)}{QUERY_FIELD} {e.query}\n\n" for e in examples)
        return cls(shots)

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{TEMPLATE_VERSION}\0{self.prefix}".encode()).hexdigest()[:16]

    def for_document(self, document: Document) -> str:
        return f"{self.prefix}{_render(document, TARGET_WORDS)}{QUERY_FIELD}"
