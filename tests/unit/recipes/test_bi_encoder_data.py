"""Bi-encoder training data on a tiny fake dataset: examples, clash-free batches, false-negative filter."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from search_common.documents import Document
from training.bi_encoder.data import (
    Example,
    attach_hard_negatives,
    examples_sha256,
    filter_false_negatives,
    in_batch_safe_batches,
    positive_examples,
    pseudo_query_examples,
    sentence_query_examples,
    split_sentences,
)
from training.common.splits import split_train_dev

DOCS = {f"d{i}": Document(doc_id=f"d{i}", title=f"title {i}", text=f"text {i}") for i in range(6)}
QUERIES = {"q1": "one", "q2": "two", "q3": "three", "q4": "four", "q5": "five"}
QRELS = {
    "q1": {"d1": 1, "d2": 1},
    "q2": {"d2": 1},
    "q3": {"d3": 0},
    "q4": {"d4": 1, "missing": 1},
    "q5": {"d5": 1},
}


def test_positive_examples_one_per_relevant_pair() -> None:
    examples = positive_examples(["q4", "q1", "q2", "q3"], QUERIES, QRELS, DOCS)
    assert [(e.query_id, e.positive_id) for e in examples] == [
        ("q1", "d1"),
        ("q1", "d2"),
        ("q2", "d2"),
        ("q4", "d4"),
    ]
    assert examples[0].query == "one" and examples[0].negative_ids == ()


def test_positive_examples_exclude_dev_queries() -> None:
    train_ids, dev_ids = split_train_dev(QRELS, dev_fraction=0.4, seed=13)
    examples = positive_examples(train_ids, QUERIES, QRELS, DOCS)
    assert dev_ids and not {e.query_id for e in examples} & set(dev_ids)


def test_missing_query_text_refused() -> None:
    with pytest.raises(ValueError, match="positive_examples"):
        positive_examples(["q9"], QUERIES, {"q9": {"d1": 1}}, DOCS)


def test_batches_have_no_repeated_query_or_document() -> None:
    examples = positive_examples(list(QUERIES), QUERIES, QRELS, DOCS)
    batches = in_batch_safe_batches(examples, 3, random.Random(0))
    flat = [e for b in batches for e in b]
    assert len(flat) == len(examples) and set(flat) == set(examples)
    for batch in batches:
        assert len(batch) <= 3
        assert len({e.query_id for e in batch}) == len(batch)
        assert len({e.positive_id for e in batch}) == len(batch)
    assert in_batch_safe_batches(examples, 3, random.Random(0)) == batches
    with pytest.raises(ValueError, match="batch_size"):
        in_batch_safe_batches(examples, 0, random.Random(0))


def test_filter_false_negatives_drops_positives_unscored_and_close_scores() -> None:
    scores = {"a": 0.1, "b": 4.9, "c": 2.0, "p": 9.0}
    kept = filter_false_negatives(["p", "a", "b", "c", "z"], ["p"], scores, 5.0, margin=1.0)
    assert kept == ["a", "c"]


def test_examples_sha256_depends_on_content_and_order() -> None:
    a, b = Example("q1", "one", "d1"), Example("q2", "two", "d2")
    assert examples_sha256([a, b]) == examples_sha256([a, b])
    assert examples_sha256([a, b]) != examples_sha256([b, a])


def _teacher(query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    # "title 1" (the positive of q1) scores 9, "title 3" scores 8.5 (a likely false negative), others 1.
    table = {"title 1. text 1": 9.0, "title 3. text 3": 8.5}
    return np.array([table.get(t, 1.0) for t in texts], dtype=np.float32)


def test_attach_hard_negatives_filters_with_teacher() -> None:
    examples = [Example("q1", "one", "d1")]
    candidates = {"q1": ["d1", "d0", "d2", "d3", "d4", "d5"]}
    out = attach_hard_negatives(
        examples,
        candidates,
        QRELS,
        DOCS,
        _teacher,
        count=2,
        skip_top=1,
        depth=6,
        margin=1.0,
        rng=random.Random(0),
    )
    assert len(out) == 1
    negs = out[0].negative_ids
    assert len(negs) == 2 and set(negs) <= {"d0", "d4", "d5"}  # d1, d2 judged; d3 too close to the positive
    assert out[0].teacher_margins == pytest.approx((8.0, 8.0))
    too_many = attach_hard_negatives(
        examples,
        candidates,
        QRELS,
        DOCS,
        _teacher,
        count=4,
        skip_top=1,
        depth=6,
        margin=1.0,
        rng=random.Random(0),
    )
    assert too_many == []
    with pytest.raises(ValueError, match="attach_hard_negatives"):
        attach_hard_negatives(
            examples,
            candidates,
            QRELS,
            DOCS,
            _teacher,
            count=1,
            skip_top=3,
            depth=3,
            margin=1.0,
            rng=random.Random(0),
        )


def test_pseudo_query_examples_title_as_query_abstract_without_title() -> None:
    docs = {
        f"p{i}": Document(doc_id=f"p{i}", title=f"a long enough title {i}", text=f"abstract {i}")
        for i in range(5)
    }
    docs["short"] = Document(doc_id="short", title="too short", text="abstract")
    examples = pseudo_query_examples(docs, 10, seed=0, exclude_docs=frozenset({"p0"}))
    assert {e.positive_id for e in examples} == {"p1", "p2", "p3", "p4"}
    for example in examples:
        assert example.query_id == "pq:" + example.positive_id and example.title_free
        assert example.query == docs[example.positive_id].title
        assert example.document_text(docs[example.positive_id]) == docs[example.positive_id].text
    assert len(pseudo_query_examples(docs, 2, seed=0)) == 2


def test_split_sentences_keeps_abbreviations_and_decimals_whole() -> None:
    text = "Smith et al. found a 2.5-fold rise. Levels fell (p < 0.05). 40 mice died! Why?"
    assert split_sentences(text) == [
        "Smith et al. found a 2.5-fold rise.",
        "Levels fell (p < 0.05).",
        "40 mice died!",
        "Why?",
    ]


def test_sentence_query_examples_cut_the_last_usable_sentence_from_the_positive() -> None:
    body = "Background words are here for the study. Methods were applied to all the mice. "
    docs = {
        f"s{i}": Document(
            f"s{i}", f"title {i}", body + f"We conclude that gene {i} drives tumour growth. Short."
        )
        for i in range(4)
    }
    docs["two"] = Document("two", "t", "Only two sentences are in this one. And this is the second one here.")
    examples = sentence_query_examples(docs, 10, seed=0, exclude_docs=frozenset({"s0"}))
    assert {e.positive_id for e in examples} == {"s1", "s2", "s3"}
    for example in examples:
        i = example.positive_id.removeprefix("s")
        assert example.query_id == "ict:" + example.positive_id
        assert example.query == f"We conclude that gene {i} drives tumour growth."
        shown = example.document_text(docs[example.positive_id])
        assert (
            example.query not in shown
            and shown.startswith(f"title {i}. Background")
            and shown.endswith("Short.")
        )
        # Other documents (in-batch or mined negatives) are shown whole.
        assert example.document_text(docs["two"]) == docs["two"].model_text()
    assert len(sentence_query_examples(docs, 2, seed=0)) == 2


def test_attach_hard_negatives_never_takes_a_pseudo_querys_own_document() -> None:
    docs = {
        f"p{i}": Document(doc_id=f"p{i}", title=f"a long enough title {i}", text=f"abstract {i}")
        for i in range(6)
    }
    (example,) = [e for e in pseudo_query_examples(docs, 6, seed=0) if e.positive_id == "p0"]
    seen: list[Sequence[str]] = []

    def teacher(query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        seen.append(texts)
        return np.asarray([10.0] + [0.0] * (len(texts) - 1), dtype=np.float32)

    ranked = {"pq:p0": ["p1", "p0", "p2", "p3", "p4", "p5"]}
    (out,) = attach_hard_negatives(
        [example], ranked, {}, docs, teacher, count=3, skip_top=0, depth=6, margin=1.0, rng=random.Random(0)
    )
    assert "p0" not in out.negative_ids and out.title_free
    assert all("title" not in text for text in seen[0])
