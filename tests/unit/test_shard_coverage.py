"""A group's addresses cover each shard of its index once, and their labels say which shards they serve."""

from __future__ import annotations

import pytest

from gateway.bootstrap import check_coverage
from search_common.documents import ShardDescription, shards_component


def _shards(*ids: int, num_shards: int = 3) -> list[ShardDescription]:
    return [ShardDescription("dense", i, num_shards, "idx", "v1", 10) for i in ids]


def test_every_shard_once_is_coverage() -> None:
    check_coverage("dense", _shards(0, 1, 2), all_answered=True)
    check_coverage("dense", _shards(2), all_answered=False)  # the others may be down at startup


def test_a_missing_shard_is_refused_once_every_address_answered() -> None:
    with pytest.raises(ValueError, match=r"none serves \[1\]"):
        check_coverage("dense", _shards(0, 2), all_answered=True)


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        (_shards(0, 1, 1), "served by two configured addresses"),
        ([*_shards(0), *_shards(1, num_shards=2)], r"indexes of \[2, 3\] shards"),
    ],
)
def test_overlapping_or_mismatched_shards_are_refused(shards: list[ShardDescription], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_coverage("dense", shards, all_answered=False)


def test_labels_name_the_shards_served() -> None:
    assert shards_component(_shards(1)) == "dense/shard-1"
    assert shards_component(_shards(2, 0, 1)) == "dense/shards-0-2"
    assert shards_component(_shards(0, 2)) == "dense/shards-0+2"
