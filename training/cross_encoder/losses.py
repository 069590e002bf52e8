"""Training losses over groups of one positive followed by its negatives.

Both take logits shaped [groups, 1 + negatives] where column 0 is the positive, so the same batches feed
either loss and the table compares like with like.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LossName = Literal["listwise", "bce"]

__all__ = ["ListwiseSoftmaxLoss", "LossName", "PointwiseBCELoss", "make_loss"]


def _check(logits: torch.Tensor, name: str) -> None:
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"{name}: expected logits [groups, 1 + negatives >= 2], got {tuple(logits.shape)}")


class ListwiseSoftmaxLoss(nn.Module):
    """Softmax cross-entropy of the positive against its group (InfoNCE over mined negatives).

    Args:
        temperature: logits are divided by it before the softmax.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"ListwiseSoftmaxLoss: temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        _check(logits, type(self).__name__)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits / self.temperature, target)


class PointwiseBCELoss(nn.Module):
    """Binary cross-entropy on each pair: the positive labelled 1, each negative 0.

    Args:
        pos_weight: weight of the positive term; `negatives` balances one positive against its negatives.
    """

    def __init__(self, pos_weight: float = 1.0) -> None:
        super().__init__()
        if pos_weight <= 0:
            raise ValueError(f"PointwiseBCELoss: pos_weight must be positive, got {pos_weight}")
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        _check(logits, type(self).__name__)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        weight = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight)


def make_loss(name: LossName, negatives: int) -> nn.Module:
    """The loss for a CLI choice; BCE weights the positive by the number of negatives."""
    if name == "listwise":
        return ListwiseSoftmaxLoss()
    if name == "bce":
        return PointwiseBCELoss(pos_weight=float(negatives))
    raise ValueError(f"make_loss: unknown loss {name!r}")
