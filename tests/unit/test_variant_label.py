"""Bounded variant labels downstream: strict pattern, a cap on distinct values, metadata round trip."""

from __future__ import annotations

import asyncio

import pytest

from search_common.variant_label import (
    VARIANT_METADATA_KEY,
    VariantLabels,
    current_variant,
    serving_variant,
    variant_metadata,
)


def test_labels_pass_valid_names_and_bound_the_rest() -> None:
    labels = VariantLabels(max_values=2)
    assert labels.label("hybrid") == "hybrid"
    assert labels.label("") == "none"
    assert labels.label(None) == "none"
    assert labels.label("bad name with spaces") == "other"
    assert labels.label("x" * 65) == "other"
    assert labels.label("other") == "other"
    assert labels.label("hybrid100+ce") == "hybrid100+ce"
    assert labels.label("third") == "other"  # over the cap
    assert labels.label("hybrid") == "hybrid"  # already seen: still itself
    assert labels.seen == {"hybrid", "hybrid100+ce"}


def test_labels_from_metadata() -> None:
    labels = VariantLabels()
    assert labels.from_metadata([("user-agent", "x"), (VARIANT_METADATA_KEY, "bm25")]) == "bm25"
    assert labels.from_metadata([(VARIANT_METADATA_KEY, b"\x00")]) == "other"
    assert labels.from_metadata(None) == "none"


def test_max_values_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        VariantLabels(max_values=0)


async def test_serving_variant_reaches_tasks_it_creates() -> None:
    assert variant_metadata() == ()

    async def child() -> str:
        await asyncio.sleep(0)
        return current_variant()

    with serving_variant("dense"):
        seen = await asyncio.gather(child(), child())
        assert variant_metadata() == ((VARIANT_METADATA_KEY, "dense"),)
    assert list(seen) == ["dense", "dense"]
    assert current_variant() == ""
