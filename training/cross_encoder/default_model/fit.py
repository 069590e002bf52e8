"""The bounded training pass: listwise softmax over the groups, one seeded epoch, CPU time recorded."""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from search_common.documents import Document
from training.cross_encoder.default_model.recipe import Recipe, StepCallback

logger = logging.getLogger(__name__)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_groups(
    groups: Sequence[Any],
    documents: Mapping[str, Document],
    checkpoint: Path,
    *,
    recipe: Recipe,
    progress: bool,
    on_step: StepCallback | None = None,
) -> dict[str, float | int]:
    """One epoch of listwise training over `groups`; saves the checkpoint and returns loss and timings.

    `on_step(done, total)` is called after every optimiser step (the demo shows it while it waits).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    from training.common.seeding import seed_everything
    from training.cross_encoder.losses import ListwiseSoftmaxLoss
    from training.cross_encoder.model import new_cross_encoder
    from training.cross_encoder.train import _batch_logits

    seed_everything(recipe.seed)
    model, tokenizer = new_cross_encoder(
        num_layers=recipe.layers, pooling=recipe.pooling, max_length=recipe.max_length, seed=recipe.seed
    )
    head_ids = {id(p) for p in model.head_parameters()}
    body = [(n, p) for n, p in model.named_parameters() if id(p) not in head_ids]
    no_decay = [p for n, p in body if "LayerNorm" in n or "bias" in n]
    decay = [p for n, p in body if not ("LayerNorm" in n or "bias" in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "lr": recipe.lr, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "lr": recipe.lr, "weight_decay": 0.0},
            {"params": model.head_parameters(), "lr": recipe.head_lr, "weight_decay": 0.0},
        ]
    )
    steps = max(1, math.ceil(len(groups) / recipe.batch_groups))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup * steps), steps)  # type: ignore[no-untyped-call]
    loss_fn = ListwiseSoftmaxLoss()
    by_id = dict(documents)
    model.train()
    started, cpu_started = time.perf_counter(), cpu_seconds()
    running = 0.0
    bar = tqdm(
        range(0, len(groups), recipe.batch_groups),
        desc="training cross-encoder",
        unit="batch",
        disable=not progress,
        mininterval=5,
    )
    for n, start in enumerate(bar, start=1):
        batch = list(groups[start : start + recipe.batch_groups])
        loss = loss_fn(_batch_logits(model, tokenizer, batch, by_id, recipe.max_length))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += float(loss.detach())
        if on_step is not None:
            on_step(n, steps)
        if n % 10 == 0:
            bar.set_postfix(loss=f"{running / n:.3f}")
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    model.save(checkpoint, tokenizer)
    return {"mean_loss": running / steps, "train_seconds": seconds, "train_cpu_seconds": cpu, "steps": steps}
