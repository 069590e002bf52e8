"""The seeded dev split carved out of the train queries: every training choice is made on it, not test."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corpora.beir import BeirDataset

DEV_FRACTION = 0.2
DEV_SEED = 13


def split_train_dev(
    query_ids: Iterable[str], *, dev_fraction: float = DEV_FRACTION, seed: int = DEV_SEED
) -> tuple[list[str], list[str]]:
    """Splits query ids into (train, dev), both sorted; the same ids and seed always give the same split.

    Raises:
        ValueError: dev_fraction is outside [0, 1).
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"split_train_dev: dev_fraction must be in [0, 1), got {dev_fraction}")
    ordered = sorted(set(query_ids))
    shuffled = ordered[:]
    random.Random(seed).shuffle(shuffled)
    n_dev = round(len(ordered) * dev_fraction)
    dev = set(shuffled[:n_dev])
    return [q for q in ordered if q not in dev], [q for q in ordered if q in dev]


def dev_queries(
    beir: BeirDataset, *, dev_fraction: float = DEV_FRACTION
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The dev side of a dataset's train queries: their texts and their train judgements, by query id."""
    train_qrels = beir.qrels("train")
    _, dev_ids = split_train_dev(train_qrels, dev_fraction=dev_fraction)
    texts = {q.query_id: q.text for q in beir.queries().values()}
    return {q: texts[q] for q in dev_ids}, {q: dict(train_qrels[q]) for q in dev_ids}


def seeded_folds(query_ids: Iterable[str], seed: int, folds: int = 5) -> list[list[str]]:
    """The query ids dealt into `folds` folds after a seeded shuffle, for cross-validation within dev."""
    shuffled = sorted(set(query_ids))
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i::folds] for i in range(folds)]
