"""Training-data building: dev split, negative sampling, labelled and pseudo-query groups, checksum."""

from __future__ import annotations

import random

import pytest

from search_common.documents import Document
from training.common.splits import split_train_dev
from training.cross_encoder.data import (
    PSEUDO_PREFIX,
    Group,
    document_text,
    generated_groups,
    groups_sha256,
    labelled_groups,
    pseudo_groups,
    pseudo_query_ids,
    sample_negatives,
)


def test_split_is_seeded_disjoint_and_complete() -> None:
    ids = [f"q{i}" for i in range(100)]
    train, dev = split_train_dev(ids, dev_fraction=0.2, seed=13)
    assert len(dev) == 20 and len(train) == 80
    assert set(train).isdisjoint(dev) and set(train) | set(dev) == set(ids)
    assert split_train_dev(reversed(ids), dev_fraction=0.2, seed=13) == (train, dev)
    assert split_train_dev(ids, dev_fraction=0.2, seed=14) != (train, dev)
    with pytest.raises(ValueError):
        split_train_dev(ids, dev_fraction=1.0)


def test_sample_negatives_skips_top_ranks_and_positives() -> None:
    ranked = [f"d{i}" for i in range(30)]
    negs = sample_negatives(ranked, ["d5", "d0"], count=4, skip_top=3, depth=10, rng=random.Random(0))
    assert len(negs) == 4 and len(set(negs)) == 4
    assert all(n in ranked[3:10] and n != "d5" for n in negs)


def test_sample_negatives_falls_back_deeper_then_runs_out() -> None:
    ranked = [f"d{i}" for i in range(6)]
    negs = sample_negatives(ranked, ["d3"], count=3, skip_top=2, depth=4, rng=random.Random(0))
    assert negs[:1] == ["d2"] and negs[1:] == ["d4", "d5"]
    assert len(sample_negatives(ranked, [], count=10, skip_top=2, depth=4, rng=random.Random(0))) == 4
    with pytest.raises(ValueError):
        sample_negatives(ranked, [], count=1, skip_top=4, depth=4, rng=random.Random(0))


def test_labelled_groups_one_per_positive() -> None:
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d9": 1}}
    candidates = {"q1": [f"d{i}" for i in range(20)], "q2": ["d9", "d8"]}
    groups = labelled_groups(
        ["q1", "q2"], {"q1": "one", "q2": "two"}, qrels, candidates,
        negatives=3, skip_top=2, depth=10, rng=random.Random(0),
    )  # fmt: skip
    assert [(g.query_id, g.positive) for g in groups] == [("q1", "d1"), ("q1", "d2")]  # q2 lacks negatives
    for g in groups:
        assert not {"d1", "d2"} & set(g.negatives) and len(g.negatives) == 3 and not g.title_free


def test_pseudo_groups_use_titles_and_title_free_documents() -> None:
    docs = [
        Document("a", "Aspirin lowers heart attack risk", "Body a."),
        Document("b", "Short", "Body b."),
        Document("c", "Vitamin D and bone density in adults", "Body c."),
        Document("d", "Statins reduce cholesterol in older patients", "Body d."),
    ]
    ids = pseudo_query_ids(docs, 10, seed=0)
    assert ids == [PSEUDO_PREFIX + "a", PSEUDO_PREFIX + "c", PSEUDO_PREFIX + "d"]
    assert len(pseudo_query_ids(docs, 2, seed=0)) == 2
    by_id = {d.doc_id: d for d in docs}
    candidates = {PSEUDO_PREFIX + "a": ["a", "x", "c", "d", "b"]}
    (group,) = pseudo_groups(
        [PSEUDO_PREFIX + "a"], by_id, candidates, negatives=2, skip_top=1, depth=5, rng=random.Random(0)
    )
    assert group.query == docs[0].title and group.positive == "a" and group.title_free
    assert "a" not in group.negatives
    assert document_text(docs[0], title_free=True) == "Body a."
    assert document_text(docs[0], title_free=False).startswith(docs[0].title)


def test_groups_checksum_tracks_content_and_order() -> None:
    g1 = Group("q", "text", "d1", ("d2", "d3"))
    g2 = Group("q", "text", "d1", ("d3", "d2"))
    assert groups_sha256([g1]) == groups_sha256([Group("q", "text", "d1", ("d2", "d3"))])
    assert groups_sha256([g1]) != groups_sha256([g2])
    assert groups_sha256([g1, g2]) != groups_sha256([g2, g1])


def test_generated_queries_train_on_their_own_document_shown_whole_with_mined_negatives() -> None:
    ranked = {"gq:d1": ["d1", "d2", "d3", "d4", "d5", "d6"], "gq:d9": ["d9"]}
    groups = generated_groups(
        {"gq:d1": "what is d1 about", "gq:d9": "too few candidates"},
        ranked,
        negatives=2,
        skip_top=1,
        depth=5,
        rng=random.Random(3),
    )
    (group,) = groups  # d9 has no negatives to draw: left out
    assert (group.query_id, group.query, group.positive, group.title_free) == (
        "gq:d1",
        "what is d1 about",
        "d1",
        False,
    )
    assert len(group.negatives) == 2 and set(group.negatives) <= {"d2", "d3", "d4", "d5"}
