"""Losses on tiny tensors: known values, gradients pointing the right way, shape checks."""

from __future__ import annotations

import math

import pytest
import torch

from training.cross_encoder.losses import ListwiseSoftmaxLoss, PointwiseBCELoss, make_loss


def test_listwise_at_prior_is_log_group_size() -> None:
    logits = torch.zeros(3, 5)
    assert ListwiseSoftmaxLoss()(logits).item() == pytest.approx(math.log(5))


def test_listwise_rewards_positive_first() -> None:
    good = torch.tensor([[5.0, 0.0, 0.0]])
    bad = torch.tensor([[0.0, 5.0, 0.0]])
    loss = ListwiseSoftmaxLoss()
    assert loss(good).item() < loss(bad).item()
    logits = torch.zeros(1, 3, requires_grad=True)
    loss(logits).backward()
    assert logits.grad is not None and logits.grad[0, 0] < 0 < logits.grad[0, 1]


def test_bce_values_and_positive_weight() -> None:
    logits = torch.zeros(2, 3)
    assert PointwiseBCELoss()(logits).item() == pytest.approx(math.log(2))
    weighted = PointwiseBCELoss(pos_weight=2.0)(logits).item()
    assert weighted == pytest.approx(math.log(2) * (2 + 2) / 3)


def test_losses_check_shapes_and_names() -> None:
    with pytest.raises(ValueError, match="ListwiseSoftmaxLoss"):
        ListwiseSoftmaxLoss()(torch.zeros(4))
    with pytest.raises(ValueError, match="PointwiseBCELoss"):
        PointwiseBCELoss()(torch.zeros(4, 1))
    with pytest.raises(ValueError):
        ListwiseSoftmaxLoss(temperature=0.0)
    assert isinstance(make_loss("listwise", 4), ListwiseSoftmaxLoss)
    assert isinstance(make_loss("bce", 4), PointwiseBCELoss)
