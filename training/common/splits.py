"""The seeded dev split carved out of the train queries: every training choice is made on it, not test."""

from __future__ import annotations

import random
from collections.abc import Iterable

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
