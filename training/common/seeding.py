"""One call that fixes every random source a training run touches."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch; CPU training with a fixed seed and thread count is then repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    logger.debug("seeded python, numpy and torch with %d", seed)
