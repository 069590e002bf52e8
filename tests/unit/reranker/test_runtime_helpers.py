"""Pure helpers of the cross-encoder runtime: length sort, inverse permutation, batching, splitting."""

from __future__ import annotations

import numpy as np
import pytest

from model_runtimes.cross_encoder.pairs import batch_slices, length_order, pad_batch, split_by_counts


def test_length_order_sorts_longest_first_and_inverse_restores_input_order() -> None:
    lengths = [3, 9, 1, 9, 5]
    order, inverse = length_order(lengths)
    assert [lengths[i] for i in order] == [9, 9, 5, 3, 1]
    assert list(order[:2]) == [1, 3]  # ties keep input order
    values = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    assert np.array_equal(values[order][inverse], values)


def test_length_order_of_nothing_is_empty() -> None:
    order, inverse = length_order([])
    assert order.size == 0 and inverse.size == 0


def test_batch_slices_cover_everything_once() -> None:
    slices = batch_slices(10, 4)
    assert [(s.start, s.stop) for s in slices] == [(0, 4), (4, 8), (8, 10)]
    assert batch_slices(0, 4) == []
    with pytest.raises(ValueError, match="batch_size"):
        batch_slices(3, 0)


def test_split_by_counts_gives_each_request_its_scores() -> None:
    values = np.arange(6, dtype=np.float32)
    parts = split_by_counts(values, [2, 0, 3, 1])
    assert [p.tolist() for p in parts] == [[0.0, 1.0], [], [2.0, 3.0, 4.0], [5.0]]
    with pytest.raises(ValueError, match="sum to"):
        split_by_counts(values, [2, 2])


def test_pad_batch_pads_to_the_longest_row_only() -> None:
    ids, mask, types = pad_batch([[101, 7, 102], [101, 102]], [[0, 0, 0], [0, 0]], pad_id=0)
    assert ids.shape == (2, 3) and ids.dtype == np.int64
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert types.tolist() == [[0, 0, 0], [0, 0, 0]]
