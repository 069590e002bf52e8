"""PyLate's contrastive ColBERT training over groups of one positive and hard negatives (shared by the
supervised recipe and the zero-label one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from search_common.documents import Document
from training.common.seeding import seed_everything
from training.cross_encoder.data import Group, document_text
from training.cross_encoder.default_model.recipe import StepCallback


@dataclass(frozen=True, slots=True)
class FitParameters:
    """What the model and the optimiser need; the data's make-up is the recipe's business."""

    base: str
    batch_size: int = 16
    negatives: int = 3
    lr: float = 3e-5
    warmup: float = 0.1
    dim: int = 128
    query_length: int = 32
    document_length: int = 256
    temperature: float = 1.0
    seed: int = 13


def _as_dataset(groups: Sequence[Group], documents: Mapping[str, Document], negatives: int) -> Any:
    from datasets import Dataset

    columns: dict[str, list[str]] = {"query": [], "positive": []}
    for i in range(negatives):
        columns[f"negative_{i}"] = []
    for group in groups:
        columns["query"].append(group.query)
        columns["positive"].append(document_text(documents[group.positive], title_free=group.title_free))
        for i, negative in enumerate(group.negatives):
            columns[f"negative_{i}"].append(document_text(documents[negative], title_free=group.title_free))
    return Dataset.from_dict(columns)


def fit(
    hp: FitParameters,
    groups: Sequence[Group],
    documents: Mapping[str, Document],
    work: Path,
    *,
    on_step: StepCallback | None = None,
) -> Any:
    """PyLate's contrastive training; returns the trained `pylate.models.ColBERT`.

    `on_step(done, total)` is told after every optimiser step (a waiting demo shows it).
    """
    from pylate import losses, models, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if on_step is not None:
                on_step(int(state.global_step), int(state.max_steps))

    seed_everything(hp.seed)
    model = models.ColBERT(
        model_name_or_path=hp.base,
        embedding_size=hp.dim,
        query_length=hp.query_length,
        document_length=hp.document_length,
        device="cuda" if torch.cuda.is_available() else "cpu",
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=1,  # the epochs are already unrolled in `groups`, each with fresh negatives
        per_device_train_batch_size=hp.batch_size,
        learning_rate=hp.lr,
        warmup_ratio=hp.warmup,
        seed=hp.seed,
        data_seed=hp.seed,
        bf16=torch.cuda.is_available(),
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=_as_dataset(groups, documents, hp.negatives),
        loss=losses.Contrastive(model=model, temperature=hp.temperature),
        data_collator=utils.ColBERTCollator(model.tokenize),
        callbacks=[_Progress()],
    )
    trainer.train()
    return model
