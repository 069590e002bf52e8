"""The default model's recipe and budget, their constants, and its one error type."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

# 2: sentence queries whose words still appear in their masked positive are dropped (a gate leak).
RECIPE_VERSION = 2
DEFAULT_OUT_ROOT = Path("var/models/cross-encoder-default")
MODEL_NAME = "cross-encoder-minilm"
CORPUS_FILE = "corpus.jsonl"
SENTENCE_PREFIX = "s:"
NAME_PREFIX = "n:"
MIN_QUERY_WORDS = 4
MAX_QUERY_WORDS = 32
MAX_QUERY_CHARS = 200
MIN_REST_WORDS = 8
EVAL_WEIGHTS: tuple[float, ...] = (0.3, 0.5, 0.7)

QueryKind = Literal["sentence", "name"]


class DefaultModelError(RuntimeError):
    """The default model cannot be trained or did not beat its first stage on held-out queries."""


@dataclass(frozen=True)
class Budget:
    """Hard bounds on first-run work.

    Args:
        max_groups: training groups (one positive + `Recipe.negatives` negatives each), one epoch.
        held_out: documents whose first-sentence queries are held out for evaluation.
        eval_depth: first-stage candidates re-ranked per held-out query.
    """

    max_groups: int = 1500
    held_out: int = 300
    eval_depth: int = 20


@dataclass(frozen=True)
class Recipe:
    """Learning hyper-parameters (the SciFact listwise recipe, shortened to one bounded epoch)."""

    negatives: int = 4
    max_length: int = 128
    layers: int = 6
    pooling: Literal["mean", "cls"] = "mean"
    lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_groups: int = 4
    skip_top: int = 3
    neg_depth: int = 30
    name_share: float = 0.25
    seed: int = 13


DEFAULT_BUDGET = Budget()
DEFAULT_RECIPE = Recipe()


# Told (steps done, steps in all) after every training step.
StepCallback = Callable[[int, int], None]


def corpus_file(corpus: Path) -> Path:
    """The corpus.jsonl of a corpus directory, or the file itself."""
    return corpus / CORPUS_FILE if corpus.is_dir() else corpus
