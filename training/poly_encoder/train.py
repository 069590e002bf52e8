"""Train a poly-encoder reranker on SciFact train (dev held out); measure it on dev; publish if it helps.

The network is `model_runtimes.poly_encoder.PolyEncoder`: a transformer body (`--base`, by default the
packaged all-MiniLM-L6-v2; the dev-split fine-tuned bi-encoder is a stronger start) and `--codes` learned
query codes. No library trains poly-encoders, so the loop is written here: AdamW with linear warm-up and
decay, the codes at a higher learning rate than the body, seeded. The data are the ColBERT recipe's
(`training.late_interaction.train.training_groups`): each judged train pair with `--negatives` hard
negatives from the hybrid first stage, plus title pseudo-queries, fresh every epoch. Each query is scored
against every document of its batch (its positive, its negatives and the other queries' documents: in-batch
negatives) with a softmax cross-entropy over the cosines times `--scale`.

After training it re-ranks the dev queries' hybrid candidates with the serving runtime's scoring, alone and
RRF-fused, and publishes `--out/<version>` only when it beats the first stage on dev, alone or fused (else
`.rejected-<version>`, exit 1).

    .venv/bin/python -m training.poly_encoder.train --dataset ../shared/data/scifact \\
        --out var/models/poly-encoder --base var/models/bi-encoder-dev/<version>
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from corpora.beir import BeirDataset
from model_runtimes.bi_encoder import default_model_dir
from model_runtimes.poly_encoder import PolyEncoder, PolyEncoderModel, tokenize
from search_common.artifacts import MANIFEST_NAME, atomic_directory, new_version, write_manifest
from search_common.documents import Document
from search_common.logging_setup import configure_logging
from training.common.seeding import seed_everything
from training.cross_encoder.data import Group, document_text, groups_sha256
from training.cross_encoder.evaluate import PairScorer
from training.late_interaction.train import (
    GateRefused,
    add_recipe_arguments,
    check_recipe_arguments,
    dev_figures,
    dev_gate,
    refuse,
    training_groups,
)
from training.poly_encoder.artifact import save_artifact

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HyperParameters:
    base: str
    codes: int = 16
    epochs: int = 1
    batch_size: int = 16
    negatives: int = 1
    pseudo_queries: int = 300
    lr: float = 3e-5
    codes_lr: float = 1e-3
    warmup: float = 0.1
    scale: float = 20.0
    query_length: int = 64
    document_length: int = 256
    skip_top: int = 3
    neg_depth: int = 30
    dev_depth: int = 30
    dev_fraction: float = 0.2
    seed: int = 13


def _loss(network: PolyEncoder, tokenizer: Any, batch: Sequence[Group], documents: Mapping[str, Document],
          hp: HyperParameters) -> torch.Tensor:  # fmt: skip
    """Softmax cross-entropy of each query over every document of the batch; its positive is the label."""
    queries = [g.query for g in batch]
    texts = [document_text(documents[g.positive], title_free=g.title_free) for g in batch]
    texts += [document_text(documents[n], title_free=g.title_free) for g in batch for n in g.negatives]
    query_vectors = network.queries(tokenize(tokenizer, queries, hp.query_length))
    document_vectors = network.documents(tokenize(tokenizer, texts, hp.document_length))
    logits = PolyEncoder.scores(query_vectors, document_vectors) * hp.scale
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))


def fit(
    hp: HyperParameters, groups: Sequence[Group], documents: Mapping[str, Document], tokenizer: Any
) -> PolyEncoder:
    seed_everything(hp.seed)
    network = PolyEncoder.from_base(Path(hp.base), hp.codes, seed=hp.seed)
    network.train()
    optimizer = torch.optim.AdamW(
        [
            {"params": network.body.parameters(), "lr": hp.lr},
            {"params": [network.codes], "lr": hp.codes_lr},
        ],
        weight_decay=0.01,
    )
    steps = math.ceil(len(groups) / hp.batch_size)
    warmup = max(1, int(steps * hp.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    progress = tqdm(range(steps), desc="poly-encoder", unit="step", mininterval=10)
    for step in progress:
        batch = groups[step * hp.batch_size : (step + 1) * hp.batch_size]
        loss = _loss(network, tokenizer, batch, documents, hp)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    return network.eval()


def pair_scorer(model: PolyEncoderModel) -> PairScorer:
    """A pair scorer for `score_candidates_with`: each distinct query and document is encoded once, and
    scored as the serving runtime scores."""

    def score(queries: list[str], texts: list[str]) -> npt.NDArray[np.float32]:
        distinct_q = sorted(set(queries))
        distinct_d = sorted(set(texts))
        q_vectors = dict(zip(distinct_q, model.encode_queries(distinct_q), strict=True))
        d_vectors = dict(zip(distinct_d, model.encode_documents(distinct_d), strict=True))
        scores = [
            PolyEncoder.scores(torch.from_numpy(q_vectors[q])[None], torch.from_numpy(d_vectors[t]))[0, 0]
            for q, t in zip(queries, texts, strict=True)
        ]
        return np.array([float(s) for s in scores], dtype=np.float32)

    return score


def train(dataset: Path, out: Path, hp: HyperParameters, *, cache: Path, indexes: Path) -> Path:
    """Runs the recipe; returns the published artifact's directory (raises GateRefused otherwise)."""
    data = BeirDataset(dataset)
    documents = {d.doc_id: d for d in data.corpus()}
    groups, dev_ids = training_groups(hp, data, documents, cache=cache, indexes=indexes)
    # Whole batches of distinct positives: a document twice in a batch would be its own in-batch negative.
    groups = _distinct_batches(groups, hp.batch_size)
    logger.info("%d training groups over %d epochs, %d dev queries", len(groups), hp.epochs, len(dev_ids))
    version = new_version()
    started = time.perf_counter()
    cpu_started = time.process_time()
    tokenizer = AutoTokenizer.from_pretrained(hp.base)
    with atomic_directory(out / version) as staging:
        network = fit(hp, groups, documents, tokenizer)
        train_minutes = (time.perf_counter() - started) / 60
        manifest = save_artifact(
            staging, network, tokenizer,
            version=version, query_length=hp.query_length, document_length=hp.document_length,
        )  # fmt: skip
        model = PolyEncoderModel.load(staging)
        eval_started = time.perf_counter()
        figures = dev_figures(pair_scorer(model), hp, data, documents, cache=cache, indexes=indexes)
        report = figures["dev"]
        logger.info(
            "dev nDCG@10: first stage %.4f; poly-encoder alone %s; best fused %s",
            report["first_stage"], report["ce"], figures["dev_best_fused"],
        )  # fmt: skip
        (staging / MANIFEST_NAME).unlink()
        write_manifest(
            staging,
            {
                **manifest,
                "dataset": dataset.name,
                "hyperparameters": asdict(hp),
                "training_groups": len(groups),
                "training_data_sha256": groups_sha256(groups),
                "train_minutes": train_minutes,
                "train_cpu_minutes": (time.process_time() - cpu_started) / 60,
                "dev_eval_minutes": (time.perf_counter() - eval_started) / 60,
                **figures,
                "dev_gate": (gate := dev_gate(figures)),
            },
        )
    if not gate["passes"]:
        refuse(out / version, f"beats its first stage on dev neither alone nor fused: {gate}")
    return out / version


def _distinct_batches(groups: Sequence[Group], batch_size: int) -> list[Group]:
    """The groups reordered so that no batch holds one positive twice (a group that cannot be placed goes
    to the end, where it still trains)."""
    pending = list(groups)
    ordered: list[Group] = []
    while pending:
        batch: list[Group] = []
        seen: set[str] = set()
        rest: list[Group] = []
        for group in pending:
            if len(batch) < batch_size and group.positive not in seen:
                batch.append(group)
                seen.add(group.positive)
            else:
                rest.append(group)
        ordered += batch
        pending = rest
    return ordered


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_recipe_arguments(parser, epochs=1, negatives=1, dev_depth=30)
    parser.add_argument("--codes", type=int, default=16)
    args = parser.parse_args(argv)
    check_recipe_arguments(parser, args, also_positive=("codes",))
    configure_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    hp = HyperParameters(
        base=str(args.base or default_model_dir()), codes=args.codes, epochs=args.epochs,
        batch_size=args.batch_size, negatives=args.negatives, pseudo_queries=args.pseudo_queries,
        document_length=args.document_length, dev_depth=args.dev_depth, seed=args.seed,
    )  # fmt: skip
    try:
        published = train(args.dataset, args.out, hp, cache=args.cache, indexes=args.indexes)
    except GateRefused as refused:
        logger.error("not published: %s", refused)
        raise SystemExit(1) from None
    logger.info("published %s", published)


if __name__ == "__main__":
    main()
