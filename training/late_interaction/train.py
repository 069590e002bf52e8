"""Train a ColBERT late-interaction reranker with PyLate on SciFact train (dev held out); measure it on dev.

The body is the packaged all-MiniLM-L6-v2 or a fine-tuned bi-encoder in the same format (`--base`); PyLate
adds the `[Q]`/`[D]` markers and a linear projection to `--dim`. Training groups are the cross-encoder's:
each judged train pair with `--negatives` hard negatives from the hybrid first stage's ranks
(skip_top, neg_depth], plus a fresh seeded sample of title pseudo-queries every epoch; PyLate's contrastive
loss scores each query against its own negatives and every other document in the batch.

After training it
1. checks that the serving runtime (`model_runtimes.late_interaction`) reproduces PyLate's token vectors,
   and refuses to publish otherwise;
2. re-ranks the dev queries' hybrid candidates at several depths with the serving runtime, alone and
   RRF-fused;
3. publishes `--out/<version>` with a manifest: hyper-parameters, data checksum, timings, dev figures -
   only when it beats the first stage on dev, alone or fused (else it is kept as `.rejected-<version>`).

Runs in the training environment `.venv-colbert` (PyLate pins older sentence-transformers and transformers
than the services use; `scripts/setup.sh` makes it):

    .venv-colbert/bin/python -m training.late_interaction.train --dataset ../shared/data/scifact \\
        --out var/models/colbert-candidates --base var/models/bi-encoder-dev/<version> --epochs 2
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np
import numpy.typing as npt
import torch

from corpora.beir import BeirDataset
from model_runtimes.bi_encoder import default_model_dir
from model_runtimes.late_interaction import LateInteractionEncoder, maxsim
from search_common.artifacts import atomic_directory, new_version, sha256_tree, write_manifest
from search_common.documents import Document
from search_common.logging_setup import configure_logging
from training.common.splits import dev_queries, split_train_dev
from training.cross_encoder.data import (
    Group,
    groups_sha256,
    labelled_groups,
    pseudo_groups,
    pseudo_query_ids,
)
from training.cross_encoder.evaluate import PairScorer, rerank_report, score_candidates_with
from training.cross_encoder.mine import (
    DEFAULT_CACHE,
    DEFAULT_INDEXES,
    first_stage_candidates,
    labelled_queries,
)
from training.cross_encoder.mine import pseudo_queries as all_pseudo_queries
from training.late_interaction.fit import FitParameters, fit

logger = logging.getLogger(__name__)

# The serving runtime must give PyLate's vectors to this tolerance (float32, same weights).
EXPORT_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class HyperParameters:
    base: str
    epochs: int = 2
    batch_size: int = 16
    negatives: int = 3
    pseudo_queries: int = 300
    lr: float = 3e-5
    warmup: float = 0.1
    dim: int = 128
    query_length: int = 32
    document_length: int = 256
    temperature: float = 1.0
    skip_top: int = 3
    neg_depth: int = 30
    dev_depth: int = 50
    dev_fraction: float = 0.2
    seed: int = 13

    def fit_parameters(self) -> FitParameters:
        return FitParameters(
            base=self.base, batch_size=self.batch_size, negatives=self.negatives, lr=self.lr,
            warmup=self.warmup, dim=self.dim, query_length=self.query_length,
            document_length=self.document_length, temperature=self.temperature, seed=self.seed,
        )  # fmt: skip


def training_groups(
    hp: GroupRecipe,
    data: BeirDataset,
    documents: Mapping[str, Document],
    *,
    cache: Path,
    indexes: Path,
) -> tuple[list[Group], list[str]]:
    """Every epoch's groups (fresh negatives and pseudo-queries each epoch), and the dev query ids."""
    queries = {q.query_id: q.text for q in data.queries().values()}
    train_qrels = data.qrels("train")
    train_ids, dev_ids = split_train_dev(train_qrels, dev_fraction=hp.dev_fraction)
    labelled = first_stage_candidates(
        data.corpus_path, labelled_queries(data.root), cache_dir=cache, index_root=indexes / data.root.name
    )
    pseudo = first_stage_candidates(
        data.corpus_path, all_pseudo_queries(data.root), cache_dir=cache, index_root=indexes / data.root.name
    )
    # Documents judged for dev queries never serve as pseudo-query positives.
    dev_docs = frozenset(d for q in dev_ids for d in train_qrels.get(q, {}))
    usable = pseudo_query_ids(list(documents.values()), len(documents), seed=hp.seed)
    pool = [p for p in usable if p in pseudo]
    rng = random.Random(hp.seed)
    groups: list[Group] = []
    for _ in range(hp.epochs):
        epoch = labelled_groups(
            train_ids, queries, train_qrels, labelled,
            negatives=hp.negatives, skip_top=hp.skip_top, depth=hp.neg_depth, rng=rng,
        )  # fmt: skip
        if hp.pseudo_queries > 0 and pool:
            chosen = sorted(rng.sample(pool, min(hp.pseudo_queries, len(pool))))
            epoch += pseudo_groups(
                chosen, documents, pseudo,
                negatives=hp.negatives, skip_top=hp.skip_top, depth=hp.neg_depth, rng=rng,
                exclude_docs=dev_docs,
            )  # fmt: skip
        rng.shuffle(epoch)
        groups += epoch
    return groups, dev_ids


def check_runtime(model: Any, directory: Path, texts: Sequence[str]) -> float:
    """Largest difference between PyLate's token vectors and the serving runtime's, queries and documents."""
    runtime = LateInteractionEncoder.load(directory)
    worst = 0.0
    theirs_q = model.encode(list(texts), is_query=True, convert_to_numpy=True)
    ours_q = runtime.encode_queries(texts)
    for a, b in zip(theirs_q, ours_q, strict=True):
        worst = max(worst, float(np.abs(np.asarray(a) - b[: len(a)]).max()))
    theirs_d = model.encode(list(texts), is_query=False, convert_to_numpy=True)
    ours_d = runtime.encode_documents(texts)
    for a, b in zip(theirs_d, ours_d, strict=True):
        if np.asarray(a).shape != b.shape:
            raise ValueError(f"runtime keeps {b.shape[0]} document tokens where PyLate keeps {len(a)}")
        worst = max(worst, float(np.abs(np.asarray(a) - b).max()))
    return worst


def late_interaction_scorer(encoder: LateInteractionEncoder) -> PairScorer:
    """A pair scorer for `score_candidates_with`: each distinct query and document is encoded once."""

    def score(queries: list[str], texts: list[str]) -> npt.NDArray[np.float32]:
        distinct_q = sorted(set(queries))
        distinct_d = sorted(set(texts))
        q_vectors = dict(zip(distinct_q, encoder.encode_queries(distinct_q), strict=True))
        d_vectors = dict(zip(distinct_d, encoder.encode_documents(distinct_d), strict=True))
        return np.array(
            [maxsim(q_vectors[q], [d_vectors[t]])[0] for q, t in zip(queries, texts, strict=True)],
            dtype=np.float32,
        )

    return score


class DevSplit(Protocol):
    """What the dev figures need of a recipe."""

    @property
    def dev_fraction(self) -> float: ...
    @property
    def dev_depth(self) -> int: ...


class GroupRecipe(Protocol):
    """What `training_groups` needs of a recipe (the ColBERT and poly-encoder recipes share the data)."""

    @property
    def epochs(self) -> int: ...
    @property
    def negatives(self) -> int: ...
    @property
    def pseudo_queries(self) -> int: ...
    @property
    def skip_top(self) -> int: ...
    @property
    def neg_depth(self) -> int: ...
    @property
    def dev_fraction(self) -> float: ...
    @property
    def seed(self) -> int: ...


def dev_figures(
    scorer: PairScorer,
    hp: DevSplit,
    data: BeirDataset,
    documents: Mapping[str, Document],
    *,
    cache: Path,
    indexes: Path,
) -> dict[str, Any]:
    """Re-ranking nDCG@10 on dev: first stage, late interaction alone at each depth, and RRF-fused."""
    queries, dev_qrels = dev_queries(data, dev_fraction=hp.dev_fraction)
    candidates = first_stage_candidates(
        data.corpus_path, labelled_queries(data.root), cache_dir=cache, index_root=indexes / data.root.name
    )
    scores = score_candidates_with(
        scorer, sorted(queries), queries, candidates, documents, depth=hp.dev_depth
    )
    depths = sorted({d for d in (10, 20, 30, 50, 100, hp.dev_depth) if d <= hp.dev_depth})
    report = rerank_report(scores, candidates, dev_qrels, documents, depths=depths)
    depth, weight, fused = report.best_fused()
    return {"dev": report.as_dict(), "dev_best_fused": {"depth": depth, "weight": weight, "ndcg@10": fused}}


def train(dataset: Path, out: Path, hp: HyperParameters, *, cache: Path, indexes: Path) -> Path:
    """Runs the recipe; returns the published artifact's directory."""
    data = BeirDataset(dataset)
    documents = {d.doc_id: d for d in data.corpus()}
    groups, dev_ids = training_groups(hp, data, documents, cache=cache, indexes=indexes)
    logger.info("%d training groups over %d epochs, %d dev queries", len(groups), hp.epochs, len(dev_ids))
    version = new_version()
    started = time.perf_counter()
    cpu_started = time.process_time()
    with atomic_directory(out / version) as staging:
        model = fit(hp.fit_parameters(), groups, documents, staging / ".trainer")
        train_minutes = (time.perf_counter() - started) / 60
        model.save(str(staging))
        shutil.rmtree(staging / ".trainer")  # the trainer's scratch, not part of the artifact
        probe = [documents[g.positive].model_text() for g in groups[:8]] + [g.query for g in groups[:8]]
        error = check_runtime(model, staging, probe)
        if error > EXPORT_TOLERANCE:
            raise RuntimeError(f"the serving runtime differs from PyLate by {error:.2e} > {EXPORT_TOLERANCE}")
        encoder = LateInteractionEncoder.load(staging)
        eval_started = time.perf_counter()
        figures = dev_figures(
            late_interaction_scorer(encoder), hp, data, documents, cache=cache, indexes=indexes
        )
        report = figures["dev"]
        logger.info(
            "dev nDCG@10: first stage %.4f; late interaction alone %s; best fused %s",
            report["first_stage"], report["ce"], figures["dev_best_fused"],
        )  # fmt: skip
        write_manifest(
            staging,
            {
                "name": "colbert-minilm",
                "version": version,
                "kind": "late-interaction",
                "dataset": dataset.name,
                "hyperparameters": asdict(hp),
                "dimension": encoder.dimension,
                "query_length": hp.query_length,
                "document_length": hp.document_length,
                "training_groups": len(groups),
                "training_data_sha256": groups_sha256(groups),
                "train_minutes": train_minutes,
                "train_cpu_minutes": (time.process_time() - cpu_started) / 60,
                "dev_eval_minutes": (time.perf_counter() - eval_started) / 60,
                "runtime_max_abs_error": error,
                **figures,
                "dev_gate": (gate := dev_gate(figures)),
                "weights_sha256": sha256_tree(staging),
            },
        )
    if not gate["passes"]:
        refuse(out / version, f"beats its first stage on dev neither alone nor fused: {gate}")
    return out / version


class GateRefused(RuntimeError):
    """The trained model did not beat its first stage on held-out queries, so it was not published."""


def refuse(artifact: Path, why: str) -> NoReturn:
    """Keeps a refused model for inspection as `.rejected-<name>` beside where it would have been published
    (a name no loader picks: latest_version skips dot names), and raises GateRefused saying why."""
    kept = artifact.with_name(f".rejected-{artifact.name}")
    artifact.rename(kept)
    raise GateRefused(f"{kept}: {why}")


def dev_gate(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The publish rule: the model re-ranks the dev queries' first stage better than the first stage does,
    alone at some depth or RRF-fused at the depth and weight dev chose."""
    report = figures["dev"]
    first_stage = float(report["first_stage"])
    alone = max(float(v) for v in report["ce"].values())
    fused = float(figures["dev_best_fused"]["ndcg@10"])
    return {
        "first_stage": first_stage,
        "best_alone": alone,
        "best_fused": fused,
        "passes": max(alone, fused) > first_stage,
    }


def add_recipe_arguments(
    parser: argparse.ArgumentParser, *, epochs: int, negatives: int, dev_depth: int
) -> None:
    """The flags the recipes over SciFact's train pairs share (this one and `training.poly_encoder.train`)."""
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR folder with qrels/train.tsv")
    parser.add_argument("--out", type=Path, required=True, help="the artifact goes to OUT/<version>")
    parser.add_argument("--base", type=Path, default=None, help="body (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--negatives", type=int, default=negatives)
    parser.add_argument("--pseudo-queries", type=int, default=300, help="title pseudo-queries per epoch")
    parser.add_argument("--document-length", type=int, default=256)
    parser.add_argument("--dev-depth", type=int, default=dev_depth)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--indexes", type=Path, default=DEFAULT_INDEXES)


def check_recipe_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, also_positive: Sequence[str] = ()
) -> None:
    """Exits 2 naming the first bad flag of `add_recipe_arguments` (and of `also_positive`)."""
    if not (args.dataset / "qrels" / "train.tsv").is_file():
        parser.error(f"--dataset {args.dataset}: no qrels/train.tsv")
    if args.base is not None and not (args.base / "config.json").is_file():
        parser.error(f"--base {args.base}: not a model folder (no config.json)")
    for name in ("epochs", "batch_size", "negatives", "document_length", "dev_depth", *also_positive):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.pseudo_queries < 0:
        parser.error("--pseudo-queries must be at least 0")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_recipe_arguments(parser, epochs=2, negatives=3, dev_depth=50)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--query-length", type=int, default=32)
    args = parser.parse_args(argv)
    check_recipe_arguments(parser, args, also_positive=("dim", "query_length"))
    configure_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    hp = HyperParameters(
        base=str(args.base or default_model_dir()),
        epochs=args.epochs,
        batch_size=args.batch_size,
        negatives=args.negatives,
        pseudo_queries=args.pseudo_queries,
        lr=args.lr,
        dim=args.dim,
        query_length=args.query_length,
        document_length=args.document_length,
        dev_depth=args.dev_depth,
        seed=args.seed,
    )
    try:
        published = train(args.dataset, args.out, hp, cache=args.cache, indexes=args.indexes)
    except GateRefused as refused:
        logger.error("not published: %s", refused)
        raise SystemExit(1) from None
    logger.info("published %s", published)


if __name__ == "__main__":
    main()
