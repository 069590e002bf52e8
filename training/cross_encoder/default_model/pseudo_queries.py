"""Pseudo-queries from the corpus itself: a docstring's first sentence for its document shown without it,
and the qualified name's words for the document shown without its title; ambiguous ones dropped, and so is a
sentence query whose words still appear verbatim in a field of its masked positive (a title that repeats
the first sentence, a sentence said twice)."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from search_common.corpus_file import iter_corpus
from search_common.documents import Document
from training.cross_encoder.default_model.recipe import (
    MAX_QUERY_CHARS,
    MAX_QUERY_WORDS,
    MIN_QUERY_WORDS,
    MIN_REST_WORDS,
    NAME_PREFIX,
    SENTENCE_PREFIX,
    Budget,
    QueryKind,
    Recipe,
    corpus_file,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PseudoQuery:
    """A query made from document `doc_id`; `kind` says how (see the module docstring)."""

    query_id: str
    text: str
    doc_id: str
    kind: QueryKind


@dataclass
class PseudoQuerySet:
    """Queries of every kind plus the masked documents they are trained and evaluated against."""

    queries: list[PseudoQuery] = field(default_factory=list)
    documents: dict[str, Document] = field(default_factory=dict)


_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+|$)")
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)|->")
_MARKUP = re.compile(r"[`*]+|:(?:func|meth|class|mod|attr|data|exc|obj):")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def _words(text: str) -> list[str]:
    return text.split()


def _normalized(text: str) -> str:
    """Lower-case words joined by single spaces, punctuation and markup dropped: what "verbatim" compares."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def appears_in(query: str, document: Document) -> bool:
    """Whether the query's words appear, in order and adjacent, in any field of the document.

    A gate query that does would be answered by string matching, not relevance: on a collection whose first
    sentence is the title, the masked positive kept its title, and the gate passed a model that lost on real
    queries.
    """
    needle = f" {_normalized(query)} "
    return any(needle in f" {_normalized(field)} " for field in (document.title, document.text))


def split_first_sentence(text: str) -> tuple[str, str] | None:
    """(first sentence, rest of the text), or None when the docstring has no usable first sentence.

    The first sentence is taken from the first paragraph and cleaned of reST markup; the rest is everything
    after it, so a document shown with `rest` never contains the sentence it is queried with.
    """
    stripped = text.strip()
    paragraph, _, after = stripped.partition("\n\n")
    flat = " ".join(paragraph.split())
    match = _SENTENCE_END.search(flat)
    if match is None or match.end() >= len(flat):
        first, tail = flat, ""
    else:
        first, tail = flat[: match.start()], flat[match.end() :]
    rest = " ".join(p for p in (tail, after.strip()) if p)
    return (first, rest) if first else None


def clean_query(sentence: str) -> str | None:
    """A first sentence as a query: markup and the final stop removed; None if unusable (too short or long,
    a signature line such as "dumps(obj) -> str", a doctest)."""
    if _SIGNATURE.search(sentence) or ">>>" in sentence or len(sentence) > MAX_QUERY_CHARS:
        return None
    query = " ".join(_MARKUP.sub("", sentence).split()).rstrip(".:;!?, ")
    words = _words(query)
    if not MIN_QUERY_WORDS <= len(words) <= MAX_QUERY_WORDS:
        return None
    return query


_QUALIFIED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def name_query(doc_id: str) -> str | None:
    """The qualified name's words, leaf first: "json.JSONEncoder.encode" -> "encode json encoder".

    None for ids that are not dotted names (a collection's "MED-10" says nothing about its document).
    """
    if _QUALIFIED_NAME.fullmatch(doc_id) is None:
        return None
    parts = doc_id.split(".")
    words: list[str] = []
    for part in reversed(parts):
        for word in _CAMEL.findall(part):
            lowered = word.lower()
            if lowered not in words:
                words.append(lowered)
    return " ".join(words) if len(words) >= 2 else None


def build_pseudo_queries(documents: Sequence[Document]) -> PseudoQuerySet:
    """Every pseudo-query of the corpus and the masked documents (first sentence removed where queried).

    Deterministic: the same documents always give the same queries, ids and masked texts.
    """
    drafts: dict[str, tuple[str, str]] = {}
    empty = sum(1 for doc in documents if not (doc.title.strip() or doc.text.strip()))
    if empty:
        logger.warning("%d of %d documents are empty: they can be found by id only, never queried", empty,
                       len(documents))  # fmt: skip
    for doc in documents:
        split = split_first_sentence(doc.text)
        if split is None:
            continue
        first, rest = split
        query = clean_query(first)
        if (
            query is not None
            and len(_words(rest)) >= MIN_REST_WORDS
            and not appears_in(query, Document(doc.doc_id, doc.title, rest))
        ):
            drafts[doc.doc_id] = (query, rest)
    counts = Counter(q.lower() for q, _ in drafts.values())
    result = PseudoQuerySet()
    for doc in sorted(documents, key=lambda d: d.doc_id):
        draft = drafts.get(doc.doc_id)
        if draft is not None and counts[draft[0].lower()] == 1:
            query, rest = draft
            result.documents[doc.doc_id] = Document(doc.doc_id, doc.title, rest)
            result.queries.append(PseudoQuery(SENTENCE_PREFIX + doc.doc_id, query, doc.doc_id, "sentence"))
        else:
            result.documents[doc.doc_id] = doc
        name = name_query(doc.doc_id)
        if name is not None:
            result.queries.append(PseudoQuery(NAME_PREFIX + doc.doc_id, name, doc.doc_id, "name"))
    return result


def split_queries(
    pseudo: PseudoQuerySet, budget: Budget, recipe: Recipe
) -> tuple[list[PseudoQuery], list[PseudoQuery], frozenset[str]]:
    """(training queries, held-out queries, held-out doc ids), seeded.

    Held-out documents are drawn among those with a first-sentence query; none of their queries is trained
    on. Training queries are at most `budget.max_groups`, `recipe.name_share` of them name queries.
    """
    rng = random.Random(recipe.seed)
    sentence = [q for q in pseudo.queries if q.kind == "sentence"]
    held_docs = frozenset(q.doc_id for q in rng.sample(sentence, min(budget.held_out, len(sentence) // 2)))
    held = [q for q in sentence if q.doc_id in held_docs]
    pool_s = [q for q in sentence if q.doc_id not in held_docs]
    pool_n = [q for q in pseudo.queries if q.kind == "name" and q.doc_id not in held_docs]
    n_names = min(len(pool_n), round(budget.max_groups * recipe.name_share))
    n_sentences = min(len(pool_s), budget.max_groups - n_names)
    n_names = min(len(pool_n), budget.max_groups - n_sentences)
    train = rng.sample(pool_s, n_sentences) + rng.sample(pool_n, n_names)
    rng.shuffle(train)
    return train, held, held_docs


def fitting_queries(queries: Sequence[PseudoQuery], max_tokens: int) -> list[PseudoQuery]:
    """The queries of at most `max_tokens` word pieces, so every pair keeps room for its document."""
    from transformers import AutoTokenizer

    from training.cross_encoder.model import base_model_path

    if not queries:
        return []
    tokenizer = AutoTokenizer.from_pretrained(base_model_path())
    pieces = tokenizer([q.text for q in queries], add_special_tokens=False)["input_ids"]
    return [q for q, ids in zip(queries, pieces, strict=True) if len(ids) <= max_tokens]


def prepare_queries(
    corpus: Path, budget: Budget, recipe: Recipe
) -> tuple[PseudoQuerySet, tuple[list[PseudoQuery], list[PseudoQuery], frozenset[str]]]:
    """The corpus's pseudo-queries (those fitting the token budget) and their seeded train/held-out split;
    the same inputs always give the same result, so the held-out set can be rebuilt to re-evaluate."""
    pseudo = build_pseudo_queries(list(iter_corpus(corpus_file(corpus))))
    pseudo.queries = fitting_queries(pseudo.queries, recipe.max_length // 2)
    return pseudo, split_queries(pseudo, budget, recipe)
