"""Bi-encoder losses on tiny tensors: known values, gradients, aligned batches, refused inputs."""

from __future__ import annotations

import math

import pytest
import torch

from training.bi_encoder.losses import InBatchContrastiveLoss, MarginMSELoss


def test_uniform_scores_give_log_batch() -> None:
    loss = InBatchContrastiveLoss(0.05)
    assert loss(torch.zeros(4, 4)).item() == pytest.approx(math.log(4))
    assert loss(torch.zeros(4, 4), torch.zeros(4, 2)).item() == pytest.approx(math.log(6))


def test_aligned_batch_has_low_loss_and_misaligned_high() -> None:
    loss = InBatchContrastiveLoss(0.05)
    aligned = torch.eye(4)
    shuffled = aligned[[1, 2, 3, 0]]
    assert loss(aligned).item() < 1e-6
    assert loss(shuffled).item() > 10.0


def test_temperature_scales_logits() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    expected = torch.nn.functional.cross_entropy(scores / 0.5, torch.tensor([0, 1]))
    assert InBatchContrastiveLoss(0.5)(scores).item() == pytest.approx(expected.item())


def test_contrastive_gradients_flow_to_embeddings() -> None:
    q = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    q.requires_grad_(True)
    p = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    n = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    value = InBatchContrastiveLoss(0.1)(q @ p.T, (q * n).sum(-1, keepdim=True))
    value.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_hard_negative_raises_loss() -> None:
    loss = InBatchContrastiveLoss(0.1)
    scores = torch.eye(2) * 0.5
    assert loss(scores, torch.full((2, 1), 0.5)).item() > loss(scores).item()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_bad_temperature_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="InBatchContrastiveLoss"):
        InBatchContrastiveLoss(temperature)


def test_bad_shapes_refused() -> None:
    loss = InBatchContrastiveLoss(0.05)
    with pytest.raises(ValueError, match="InBatchContrastiveLoss"):
        loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="InBatchContrastiveLoss"):
        loss(torch.zeros(2, 2), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="MarginMSELoss"):
        MarginMSELoss()(torch.zeros(2), torch.zeros(3), torch.zeros(2))


def test_margin_mse_value_and_gradient() -> None:
    pos = torch.tensor([0.8, 0.5], requires_grad=True)
    neg = torch.tensor([0.3, 0.5])
    teacher = torch.tensor([0.5, 1.0])
    value = MarginMSELoss()(pos, neg, teacher)
    assert value.item() == pytest.approx((0.0 + 1.0) / 2)
    value.backward()
    assert pos.grad is not None
    assert pos.grad[0].item() == pytest.approx(0.0) and pos.grad[1].item() < 0
