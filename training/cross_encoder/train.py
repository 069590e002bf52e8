"""Train a cross-encoder on SciFact train qrels (dev held out) with hard negatives from the first stage.

Each group is one positive followed by `--negatives` negatives drawn from the hybrid first stage's ranks
(skip_top, neg_depth]; fresh negatives are drawn every epoch. Optional pseudo-query groups (a title as the
query for its own abstract) are mixed in, a fresh seeded sample of `--pseudo-queries` each epoch. After each
epoch the checkpoint is saved and re-ranking on the dev queries is measured; `training.json` records the
hyper-parameters, the training-data checksum, timings and the dev figures.

Example:
    python -m training.cross_encoder.train --dataset /work/shared/data/scifact --out var/checkpoints/ce-lw \\
        --loss listwise --negatives 4 --max-length 128 --epochs 2 --layers 6 --seed 13 --pseudo-queries 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from corpora.beir import BeirDataset
from search_common.artifacts import sha256_file
from search_common.documents import Document
from search_common.logging_setup import configure_logging
from training.common.seeding import seed_everything
from training.common.splits import split_train_dev
from training.cross_encoder.data import (
    Group,
    document_text,
    generated_groups,
    groups_sha256,
    labelled_groups,
    pseudo_groups,
    pseudo_query_ids,
)
from training.cross_encoder.evaluate import rerank_report, score_candidates
from training.cross_encoder.losses import LossName, make_loss
from training.cross_encoder.mine import (
    DEFAULT_CACHE,
    DEFAULT_INDEXES,
    first_stage_candidates,
    labelled_queries,
)
from training.cross_encoder.mine import pseudo_queries as all_pseudo_queries
from training.cross_encoder.model import CrossEncoder, Pooling, load_cross_encoder, new_cross_encoder
from training.query_generation.generate import accepted_queries, consistent_queries, generated_query_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HyperParameters:
    loss: LossName
    negatives: int
    max_length: int
    epochs: int
    layers: int
    seed: int
    pseudo_queries: int
    pooling: Pooling
    lr: float
    head_lr: float
    weight_decay: float
    warmup: float
    batch_groups: int
    skip_top: int
    neg_depth: int
    dev_depth: int
    dev_fraction: float
    # Queries written by a language model (training.query_generation), kept by the round-trip filter.
    generated_queries: str = ""
    generated_per_epoch: int = 0
    round_trip_depth: int = 20


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _batch_logits(
    model: CrossEncoder,
    tokenizer: PreTrainedTokenizerBase,
    groups: list[Group],
    documents: dict[str, Document],
    max_length: int,
) -> torch.Tensor:
    queries: list[str] = []
    texts: list[str] = []
    for group in groups:
        for doc_id in (group.positive, *group.negatives):
            queries.append(group.query)
            texts.append(document_text(documents[doc_id], title_free=group.title_free))
    batch = tokenizer(
        queries, texts, truncation="only_second", max_length=max_length, padding=True, return_tensors="pt"
    )
    logits: torch.Tensor = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return logits.view(len(groups), -1)


def train(
    dataset: Path,
    out: Path,
    hp: HyperParameters,
    *,
    cache: Path,
    indexes: Path,
    threads: int | None = None,
    init_checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Runs the recipe and returns the record also written to out/training.json."""
    seed_everything(hp.seed)
    if threads:
        torch.set_num_threads(threads)
    data = BeirDataset(dataset)
    documents = {d.doc_id: d for d in data.corpus()}
    all_queries = {q.query_id: q.text for q in data.queries().values()}
    train_qrels = data.qrels("train")
    train_ids, dev_ids = split_train_dev(train_qrels, dev_fraction=hp.dev_fraction, seed=13)
    corpus = data.corpus_path
    labelled = first_stage_candidates(
        corpus, labelled_queries(dataset), cache_dir=cache, index_root=indexes / dataset.name
    )
    pseudo: dict[str, list[str]] = {}
    if hp.pseudo_queries > 0:
        pseudo = first_stage_candidates(
            corpus, all_pseudo_queries(dataset), cache_dir=cache, index_root=indexes / dataset.name
        )
    logger.info("train queries %d, dev queries %d", len(train_ids), len(dev_ids))
    generated, generated_ranked = _generated(hp, data, cache, indexes / dataset.name, dev_ids)

    rng = random.Random(hp.seed)
    epochs: list[list[Group]] = []
    pool = pseudo_query_ids(list(documents.values()), len(documents), seed=hp.seed) if pseudo else []
    pool = [p for p in pool if p in pseudo]
    for _ in range(hp.epochs):
        groups = labelled_groups(
            train_ids, all_queries, train_qrels, labelled,
            negatives=hp.negatives, skip_top=hp.skip_top, depth=hp.neg_depth, rng=rng,
        )  # fmt: skip
        if pool:
            chosen = sorted(rng.sample(pool, min(hp.pseudo_queries, len(pool))))
            groups += pseudo_groups(
                chosen,
                documents,
                pseudo,
                negatives=hp.negatives,
                skip_top=hp.skip_top,
                depth=hp.neg_depth,
                rng=rng,
            )
        if generated:
            chosen_ids = sorted(generated)
            if 0 < hp.generated_per_epoch < len(chosen_ids):
                chosen_ids = sorted(rng.sample(chosen_ids, hp.generated_per_epoch))
            groups += generated_groups(
                {q: generated[q] for q in chosen_ids},
                generated_ranked,
                negatives=hp.negatives,
                skip_top=hp.skip_top,
                depth=hp.neg_depth,
                rng=rng,
            )
        rng.shuffle(groups)
        epochs.append(groups)
    all_groups = [g for groups in epochs for g in groups]
    data_sha = groups_sha256(all_groups)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "train_groups.jsonl").open("w") as handle:
        for epoch, groups in enumerate(epochs, start=1):
            for g in groups:
                handle.write(json.dumps({"epoch": epoch, **asdict(g)}) + "\n")
    pairs = len(all_groups) * (1 + hp.negatives)
    logger.info(
        "%d groups, %d pairs over %d epochs; data sha256 %s", len(all_groups), pairs, hp.epochs, data_sha
    )

    if init_checkpoint is not None:
        # Continue from an earlier run's checkpoint: a further epoch, fresh schedule and negatives.
        model, tokenizer = load_cross_encoder(init_checkpoint)
    else:
        model, tokenizer = new_cross_encoder(
            num_layers=hp.layers, pooling=hp.pooling, max_length=hp.max_length, seed=hp.seed
        )
    head_ids = {id(p) for p in model.head_parameters()}
    decay = [
        p
        for n, p in model.named_parameters()
        if id(p) not in head_ids and "LayerNorm" not in n and "bias" not in n
    ]
    no_decay = [
        p for n, p in model.named_parameters() if id(p) not in head_ids and ("LayerNorm" in n or "bias" in n)
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "lr": hp.lr, "weight_decay": hp.weight_decay},
            {"params": no_decay, "lr": hp.lr, "weight_decay": 0.0},
            {"params": model.head_parameters(), "lr": hp.head_lr, "weight_decay": 0.0},
        ]
    )
    steps = sum(math.ceil(len(g) / hp.batch_groups) for g in epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.warmup * steps), steps)  # type: ignore[no-untyped-call]
    loss_fn = make_loss(hp.loss, hp.negatives)

    dev_qrels = {q: train_qrels[q] for q in dev_ids}
    record: dict[str, Any] = {
        "hyperparameters": asdict(hp),
        "training_data_sha256": data_sha,
        "sources": {
            "qrels/train.tsv": sha256_file(dataset / "qrels" / "train.tsv"),
            "corpus.jsonl": sha256_file(corpus),
            "queries.jsonl": sha256_file(dataset / "queries.jsonl"),
        },
        "dataset": dataset.name,
        "generated_queries_kept": len(generated),
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
        "train_queries": len(train_ids),
        "dev_queries": len(dev_ids),
        "pairs": pairs,
        "groups": len(all_groups),
        "epochs": [],
    }
    train_wall = 0.0
    train_cpu = 0.0
    for epoch, groups in enumerate(epochs, start=1):
        model.train()
        wall0, cpu0 = time.perf_counter(), _cpu_seconds()
        running = 0.0
        bar = tqdm(
            range(0, len(groups), hp.batch_groups), desc=f"epoch {epoch}", unit="batch", mininterval=15
        )
        for n, start in enumerate(bar, start=1):
            logits = _batch_logits(
                model, tokenizer, groups[start : start + hp.batch_groups], documents, hp.max_length
            )
            loss = loss_fn(logits)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += float(loss.detach())
            if n % 10 == 0:
                bar.set_postfix(loss=f"{running / n:.4f}")
        train_wall += time.perf_counter() - wall0
        train_cpu += _cpu_seconds() - cpu0
        mean_loss = running / max(1, math.ceil(len(groups) / hp.batch_groups))
        checkpoint = out / f"epoch-{epoch}"
        model.save(checkpoint, tokenizer)
        entry: dict[str, Any] = {
            "epoch": epoch,
            "checkpoint": str(checkpoint),
            "mean_loss": mean_loss,
            "train_minutes": train_wall / 60,
            "train_cpu_minutes": train_cpu / 60,
        }
        if dev_ids:  # a final retrain on every train query has no dev side
            entry |= _dev_figures(
                model, tokenizer, hp, dev_ids, all_queries, labelled, documents, dev_qrels, epoch, mean_loss
            )
        record["epochs"].append(entry)
        (out / "training.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _generated(
    hp: HyperParameters, data: BeirDataset, cache: Path, index_root: Path, dev_ids: Sequence[str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The generated queries that pass the round-trip filter (keyed `gq:<doc_id>`) and their first stage.

    Documents judged for dev queries are left out, whatever the cache holds, so dev stays unseen.
    """
    if not hp.generated_queries:
        return {}, {}
    qrels = data.qrels("train")
    dev_docs = {d for q in dev_ids for d in qrels.get(q, {})}
    documents = {d.doc_id: d for d in data.corpus() if d.doc_id not in dev_docs}
    answers = accepted_queries(Path(hp.generated_queries), documents)
    keyed = generated_query_ids(answers)
    ranked = first_stage_candidates(data.corpus_path, keyed, cache_dir=cache, index_root=index_root)
    kept = generated_query_ids(consistent_queries(answers, ranked, hp.round_trip_depth))
    logger.info(
        "generated queries: %d read, %d kept by the round trip (own document in the top %d)",
        len(answers), len(kept), hp.round_trip_depth,
    )  # fmt: skip
    return kept, ranked


def _dev_figures(
    model: CrossEncoder,
    tokenizer: PreTrainedTokenizerBase,
    hp: HyperParameters,
    dev_ids: list[str],
    queries: dict[str, str],
    candidates: dict[str, list[str]],
    documents: dict[str, Document],
    dev_qrels: dict[str, dict[str, int]],
    epoch: int,
    mean_loss: float,
) -> dict[str, Any]:
    """Re-ranking figures on the dev queries and the best (depth, fusion weight) among them."""
    wall0 = time.perf_counter()
    scores = score_candidates(
        model, tokenizer, dev_ids, queries, candidates, documents,
        depth=hp.dev_depth, max_length=hp.max_length,
    )  # fmt: skip
    depths = sorted({d for d in (10, 20, 30, 50, hp.dev_depth) if d <= hp.dev_depth})
    report = rerank_report(scores, candidates, dev_qrels, documents, depths=depths)
    depth, weight, fused = report.best_fused()
    logger.info(
        "epoch %d: loss %.4f, dev nDCG@10 first stage %.4f, CE@%d %.4f, fused %.4f (depth %d, w %.1f)",
        epoch, mean_loss, report.first_stage, hp.dev_depth, report.ce[hp.dev_depth], fused, depth, weight,
    )  # fmt: skip
    return {
        "dev_eval_minutes": (time.perf_counter() - wall0) / 60,
        "dev": report.as_dict(),
        "dev_best_fused": {"depth": depth, "weight": weight, "ndcg@10": fused},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--loss", choices=["listwise", "bce"], default="listwise")
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--pseudo-queries", type=int, default=0, help="title pseudo-query groups per epoch")
    parser.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--batch-groups", type=int, default=4)
    parser.add_argument("--skip-top", type=int, default=3)
    parser.add_argument("--neg-depth", type=int, default=30)
    parser.add_argument("--dev-depth", type=int, default=30)
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--indexes", type=Path, default=DEFAULT_INDEXES)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--init-checkpoint", type=Path, default=None, help="continue from this checkpoint")
    parser.add_argument(
        "--generated-queries",
        type=Path,
        default=None,
        help="JSONL written by training.query_generation.generate: its queries join training",
    )
    parser.add_argument("--generated-per-epoch", type=int, default=0, help="sample per epoch (0: all)")
    parser.add_argument(
        "--round-trip-depth", type=int, default=20, help="keep a generated query when its document ranks here"
    )
    args = parser.parse_args(argv)
    if args.generated_queries is not None and not args.generated_queries.is_file():
        parser.error(f"--generated-queries {args.generated_queries}: no such file")
    if args.round_trip_depth <= 0 or args.generated_per_epoch < 0:
        parser.error("--round-trip-depth must be positive and --generated-per-epoch at least 0")
    configure_logging()
    hp = HyperParameters(
        loss=args.loss,
        negatives=args.negatives,
        max_length=args.max_length,
        epochs=args.epochs,
        layers=args.layers,
        seed=args.seed,
        pseudo_queries=args.pseudo_queries,
        pooling=args.pooling,
        lr=args.lr,
        head_lr=args.head_lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        batch_groups=args.batch_groups,
        skip_top=args.skip_top,
        neg_depth=args.neg_depth,
        dev_depth=args.dev_depth,
        dev_fraction=args.dev_fraction,
        generated_queries=str(args.generated_queries or ""),
        generated_per_epoch=args.generated_per_epoch,
        round_trip_depth=args.round_trip_depth,
    )
    train(
        args.dataset,
        args.out,
        hp,
        cache=args.cache,
        indexes=args.indexes,
        threads=args.threads,
        init_checkpoint=args.init_checkpoint,
    )


if __name__ == "__main__":
    main()
