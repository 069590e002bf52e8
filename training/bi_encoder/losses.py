"""Bi-encoder training losses: InfoNCE over in-batch negatives, and MarginMSE distillation.

Both take scores already computed by the caller (dot products of L2-normalised embeddings, i.e. cosines),
so they are plain functions of tensors and are tested on tiny inputs without a model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InBatchContrastiveLoss", "MarginMSELoss"]


class InBatchContrastiveLoss(nn.Module):
    """InfoNCE: each query's own positive against every other positive of the batch (and extra negatives).

    Query i's logits are its similarities to all B positives (column i is its own) followed by any extra
    hard-negative columns, divided by the temperature; the loss is the cross-entropy of column i.

    Args:
        temperature: logits are divided by it; 0.05 (a scale of 20) is the sentence-transformers default.

    Example:
        loss = InBatchContrastiveLoss(0.05)(q @ p.T)          # q, p: (B, dim) unit-norm embeddings
        loss = InBatchContrastiveLoss(0.05)(q @ p.T, (q * n).sum(-1, keepdim=True))  # one hard negative each
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if not temperature > 0 or temperature != temperature:
            raise ValueError(f"InBatchContrastiveLoss: temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, scores: torch.Tensor, hard_negative_scores: torch.Tensor | None = None) -> torch.Tensor:
        """Mean InfoNCE loss.

        Args:
            scores: (B, B) similarities of query i to positive j.
            hard_negative_scores: optional (B, K) similarities of query i to its own K hard negatives.

        Returns:
            A scalar tensor.
        """
        name = type(self).__name__
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 1:
            raise ValueError(f"{name}: expected square scores (B, B), got {tuple(scores.shape)}")
        logits = scores
        if hard_negative_scores is not None:
            if hard_negative_scores.dim() != 2 or hard_negative_scores.shape[0] != scores.shape[0]:
                raise ValueError(
                    f"{name}: expected hard-negative scores (B, K), got {tuple(hard_negative_scores.shape)}"
                )
            logits = torch.cat([scores, hard_negative_scores], dim=1)
        target = torch.arange(scores.shape[0], device=scores.device)
        return F.cross_entropy(logits / self.temperature, target)


class MarginMSELoss(nn.Module):
    """MSE between the student's margin s(q, p) - s(q, n) and the teacher's (Hofstaetter et al., 2020).

    Example:
        loss = MarginMSELoss()(pos_scores, neg_scores, teacher_pos - teacher_neg)
    """

    def forward(
        self, positive_scores: torch.Tensor, negative_scores: torch.Tensor, teacher_margin: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error of the margins; all three inputs have the same shape, e.g. (B,)."""
        if positive_scores.shape != negative_scores.shape or positive_scores.shape != teacher_margin.shape:
            raise ValueError(
                f"{type(self).__name__}: shapes differ: positive {tuple(positive_scores.shape)}, "
                f"negative {tuple(negative_scores.shape)}, teacher {tuple(teacher_margin.shape)}"
            )
        return F.mse_loss(positive_scores - negative_scores, teacher_margin.to(positive_scores.dtype))
