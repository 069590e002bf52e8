"""Fine-tune the bi-encoder (all-MiniLM-L6-v2, mean pooling as in `BiEncoder`) on SciFact train qrels.

Recipes (`--recipe`):
- `mnrl`: contrastive InfoNCE over in-batch negatives with a temperature (MultipleNegativesRankingLoss);
- `hardneg`: `mnrl` plus, per query, `--negatives` extra columns: hybrid first-stage hard negatives (the
  mining cache of `training.cross_encoder.mine`) from ranks (skip_top, depth], keeping only those the
  cross-encoder (newest artifact under var/models/cross-encoder) scores `--teacher-margin` below the
  positive, so likely false negatives are dropped;
- `distill`: MarginMSE: the student's margin (cos(q, p) - cos(q, n)) / temperature fitted to the
  cross-encoder's logit margin, on the same filtered (query, positive, negative) triples.

The dev side of the seeded split (`training.common.splits`) is never trained on. The result is a versioned
HF-format directory `<out>/<version>/` (config.json, model.safetensors, tokenizer files, manifest.json)
built atomically and loadable by `model_runtimes.bi_encoder.BiEncoder.load`.

Example:
    python -m training.bi_encoder.train --dataset /work/shared/data/scifact --recipe mnrl \\
        --out var/models/bi-encoder --epochs 1 --batch-size 32 --temperature 0.05 --seed 13 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

from corpora.beir import BeirDataset
from model_runtimes.bi_encoder import DEFAULT_MODEL_NAME, WEIGHTS_FILE, default_model_dir
from search_common.artifacts import atomic_directory, new_version, sha256_file, write_manifest
from search_common.logging_setup import configure_logging
from training.bi_encoder.data import (
    Teacher,
    attach_hard_negatives,
    examples_sha256,
    in_batch_safe_batches,
    positive_examples,
    pseudo_query_examples,
    sentence_query_examples,
)
from training.bi_encoder.losses import InBatchContrastiveLoss, MarginMSELoss
from training.common.seeding import seed_everything
from training.common.splits import split_train_dev
from training.cross_encoder.mine import DEFAULT_CACHE, DEFAULT_INDEXES

logger = logging.getLogger(__name__)

Recipe = Literal["mnrl", "hardneg", "distill"]
RECIPES: tuple[Recipe, ...] = ("mnrl", "hardneg", "distill")
DEFAULT_TEACHER_ROOT = Path("var/models/cross-encoder")


@dataclass(frozen=True)
class HyperParameters:
    recipe: Recipe
    epochs: int
    batch_size: int
    temperature: float
    seed: int
    lr: float
    warmup: float
    weight_decay: float
    query_max_length: int
    doc_max_length: int
    dev_fraction: float
    negatives: int = 1
    skip_top: int = 3
    neg_depth: int = 30
    teacher_margin: float = 1.0
    pseudo_queries: int = 0
    sentence_queries: int = 0


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors under the mask, L2-normalised: the same pooling as `BiEncoder`."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)


def _embed(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    return mean_pool(hidden, batch["attention_mask"])


def train(
    dataset: Path,
    out: Path,
    hp: HyperParameters,
    *,
    base_model: Path | None = None,
    threads: int | None = None,
    max_examples: int | None = None,
    candidates: Mapping[str, Sequence[str]] | None = None,
    teacher: Teacher | None = None,
    teacher_name: str | None = None,
) -> Path:
    """Runs a recipe and returns the new artifact directory `<out>/<version>`.

    Args:
        dataset: a BEIR-layout folder with qrels/train.tsv.
        out: parent folder of versioned artifacts.
        hp: the recipe and its hyper-parameters (recorded in the manifest).
        base_model: HF-format starting point; None selects the packaged all-MiniLM-L6-v2.
        threads: torch CPU threads.
        max_examples: keep only the first N training examples (smoke tests).
        candidates: first-stage ranked doc ids per query id (hardneg, distill).
        teacher: the cross-encoder's scorer (hardneg, distill).
        teacher_name: recorded in the manifest.

    Raises:
        ValueError: hardneg/distill without candidates and teacher, or no examples left.
    """
    if hp.recipe != "mnrl" and (candidates is None or teacher is None):
        raise ValueError(f"train: recipe {hp.recipe!r} needs first-stage candidates and a teacher")
    if hp.recipe != "mnrl" and hp.sentence_queries > 0:
        raise ValueError("train: sentence queries have no mined candidates; use them with recipe 'mnrl'")
    seed_everything(hp.seed)
    if threads:
        torch.set_num_threads(threads)
    base = Path(base_model) if base_model is not None else default_model_dir()
    data = BeirDataset(dataset)
    documents = {d.doc_id: d for d in data.corpus()}
    queries = {q.query_id: q.text for q in data.queries().values()}
    train_qrels = data.qrels("train")
    train_ids, dev_ids = split_train_dev(train_qrels, dev_fraction=hp.dev_fraction)
    examples = positive_examples(train_ids, queries, train_qrels, documents)
    if max_examples is not None:
        examples = examples[:max_examples]
    held_out = frozenset(d for q in dev_ids for d, rel in train_qrels[q].items() if rel > 0)
    if hp.pseudo_queries > 0:
        examples += pseudo_query_examples(documents, hp.pseudo_queries, seed=hp.seed, exclude_docs=held_out)
    if hp.sentence_queries > 0:
        examples += sentence_query_examples(
            documents, hp.sentence_queries, seed=hp.seed + 1, exclude_docs=held_out
        )
    if not examples:
        raise ValueError(f"{dataset}: no training examples")
    rng = random.Random(hp.seed)
    if hp.recipe != "mnrl":
        assert candidates is not None and teacher is not None
        examples = attach_hard_negatives(
            tqdm(examples, desc="teacher-filtered negatives", unit="query"),
            candidates, train_qrels, documents, teacher,
            count=hp.negatives, skip_top=hp.skip_top, depth=hp.neg_depth, margin=hp.teacher_margin, rng=rng,
        )  # fmt: skip
        if not examples:
            raise ValueError(f"{dataset}: no examples kept after hard-negative filtering")
    epochs = [in_batch_safe_batches(examples, hp.batch_size, rng) for _ in range(hp.epochs)]
    data_sha = examples_sha256(e for batches in epochs for batch in batches for e in batch)
    logger.info(
        "%d train queries (%d dev held out), %d examples, %d epochs; data sha256 %s",
        len(train_ids), len(dev_ids), len(examples), hp.epochs, data_sha,
    )  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModel.from_pretrained(str(base), local_files_only=True)
    no_decay = [p for n, p in model.named_parameters() if "LayerNorm" in n or "bias" in n]
    decay = [p for n, p in model.named_parameters() if not ("LayerNorm" in n or "bias" in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": hp.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=hp.lr,
    )
    steps = sum(len(b) for b in epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(hp.warmup * steps), steps)  # type: ignore[no-untyped-call]
    loss_fn = InBatchContrastiveLoss(hp.temperature)
    margin_loss = MarginMSELoss()
    mean_losses: list[float] = []
    wall0 = time.perf_counter()
    model.train()
    for epoch, batches in enumerate(epochs, start=1):
        running = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch")
        for n, batch in enumerate(bar, start=1):
            q = _embed(model, tokenizer, [e.query for e in batch], hp.query_max_length)
            positives = [e.document_text(documents[e.positive_id]) for e in batch]
            p = _embed(model, tokenizer, positives, hp.doc_max_length)
            if hp.recipe == "mnrl":
                loss = loss_fn(q @ p.T)
            else:
                k = hp.negatives
                texts = [e.document_text(documents[d]) for e in batch for d in e.negative_ids]
                negs = _embed(model, tokenizer, texts, hp.doc_max_length).view(len(batch), k, -1)
                neg_scores = (q.unsqueeze(1) * negs).sum(-1)  # (B, k)
                if hp.recipe == "hardneg":
                    loss = loss_fn(q @ p.T, neg_scores)
                else:
                    pos_scores = (q * p).sum(-1, keepdim=True).expand(-1, k)
                    margins = torch.tensor([e.teacher_margins for e in batch], dtype=q.dtype)
                    loss = margin_loss(pos_scores / hp.temperature, neg_scores / hp.temperature, margins)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += float(loss.detach())
            bar.set_postfix(loss=f"{running / n:.4f}")
        mean_losses.append(running / max(1, len(batches)))
        logger.info("epoch %d: mean loss %.4f", epoch, mean_losses[-1])
    train_minutes = (time.perf_counter() - wall0) / 60

    version = new_version()
    target = out / version
    with atomic_directory(target) as scratch:
        model.eval()
        model.save_pretrained(str(scratch), safe_serialization=True)
        tokenizer.save_pretrained(str(scratch))
        manifest: dict[str, Any] = {
            "name": f"{DEFAULT_MODEL_NAME}-{hp.recipe}",
            "version": version,
            "recipe": hp.recipe,
            "hyperparameters": asdict(hp),
            "training_data_sha256": data_sha,
            "sources": {"qrels/train.tsv": sha256_file(dataset / "qrels" / "train.tsv")},
            "dataset": dataset.name,
            "teacher": teacher_name if hp.recipe != "mnrl" else None,
            "base_model": {"name": DEFAULT_MODEL_NAME, "weights_sha256": sha256_file(base / WEIGHTS_FILE)},
            "weights_sha256": sha256_file(scratch / WEIGHTS_FILE),
            "examples": len(examples),
            "train_queries": len(train_ids),
            "dev_queries": len(dev_ids),
            "mean_loss_per_epoch": mean_losses,
            "train_minutes": train_minutes,
        }
        write_manifest(scratch, manifest)
    logger.info("wrote %s", target.resolve())
    return target.resolve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--recipe", choices=RECIPES, required=True)
    parser.add_argument("--out", type=Path, required=True, help="parent folder of versioned artifacts")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--query-max-length", type=int, default=64)
    parser.add_argument("--doc-max-length", type=int, default=256)
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument(
        "--negatives", type=int, default=1, help="hard negatives per query (hardneg, distill)"
    )
    parser.add_argument("--skip-top", type=int, default=3, help="first-stage ranks skipped when mining")
    parser.add_argument("--neg-depth", type=int, default=30, help="deepest first-stage rank mined")
    parser.add_argument(
        "--teacher-margin", type=float, default=1.0, help="drop negatives the CE scores closer"
    )
    parser.add_argument(
        "--pseudo-queries", type=int, default=0, help="title -> own abstract examples from the corpus"
    )
    parser.add_argument(
        "--sentence-queries",
        type=int,
        default=0,
        help="abstract sentence -> rest of its abstract examples (Inverse Cloze Task; recipe mnrl)",
    )
    parser.add_argument("--teacher", type=Path, default=None, help="cross-encoder artifact (default: newest)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="first-stage mining cache")
    parser.add_argument("--indexes", type=Path, default=DEFAULT_INDEXES, help="mining index root")
    parser.add_argument("--base-model", type=Path, default=None, help="default: packaged all-MiniLM-L6-v2")
    parser.add_argument("--max-examples", type=int, default=None, help="smoke tests: first N examples")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    for flag in ("epochs", "batch_size", "negatives"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if not args.temperature > 0:
        parser.error("--temperature must be positive")
    for flag in ("pseudo_queries", "sentence_queries"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0")
    if args.sentence_queries and args.recipe != "mnrl":
        parser.error("--sentence-queries has no mined hard negatives; use it with --recipe mnrl")
    configure_logging()
    hp = HyperParameters(
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        temperature=args.temperature,
        seed=args.seed,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        query_max_length=args.query_max_length,
        doc_max_length=args.doc_max_length,
        dev_fraction=args.dev_fraction,
        negatives=args.negatives,
        skip_top=args.skip_top,
        neg_depth=args.neg_depth,
        teacher_margin=args.teacher_margin,
        pseudo_queries=args.pseudo_queries,
        sentence_queries=args.sentence_queries,
    )
    candidates: dict[str, list[str]] | None = None
    teacher: Teacher | None = None
    teacher_name: str | None = None
    if args.recipe != "mnrl":
        from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
        from search_common.artifacts import latest_version
        from training.cross_encoder.mine import first_stage_candidates, labelled_queries, pseudo_queries

        query_sets = [labelled_queries(args.dataset)]
        if args.pseudo_queries > 0:
            query_sets.append(pseudo_queries(args.dataset))
        candidates = {}
        for query_set in query_sets:
            candidates |= first_stage_candidates(
                args.dataset / "corpus.jsonl",
                query_set,
                cache_dir=args.cache,
                index_root=args.indexes / args.dataset.name,
            )
        runtime = CrossEncoderRuntime.load(args.teacher or latest_version(DEFAULT_TEACHER_ROOT))
        teacher, teacher_name = runtime.score, f"{runtime.name}@{runtime.version}"
    path = train(
        args.dataset,
        args.out,
        hp,
        base_model=args.base_model,
        threads=args.threads,
        max_examples=args.max_examples,
        candidates=candidates,
        teacher=teacher,
        teacher_name=teacher_name,
    )
    print(path, file=sys.stdout)


if __name__ == "__main__":
    main()
