"""Fit dense pseudo-relevance feedback (`prf_docs`, `prf_weight` of a variant) on the dev split.

Embeds the corpus and the dev queries (the held-out side of the train split, never test) with a dev-split
encoder, searches exactly, refines each query with `gateway.prf.rocchio` (the function the gateway serves
with) over its top `prf_docs` documents, searches again, and reports dev nDCG@10 and Recall@100 for every
(docs, weight) of the grid. The choice is the best Recall@100 whose nDCG@10 is no lower than without
feedback (ties: higher nDCG@10, then fewer documents, then the smaller weight); the record is JSON.

Example:
    python -m training.bi_encoder.fit_prf --dataset /work/shared/data/scifact \\
        --model var/models/bi-encoder/v20261127T120938Z --out bench/results/prf_fit.json
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from gateway.prf import rocchio
from model_runtimes.bi_encoder import BiEncoder
from search_common.logging_setup import configure_logging
from training.bi_encoder.evaluate import exact_search, retrieval_metrics
from training.common.splits import split_train_dev

logger = logging.getLogger(__name__)

DOCS_GRID = (1, 2, 3, 5, 10)
WEIGHT_GRID = (0.1, 0.2, 0.3, 0.5, 0.8)


def refine_all(
    query_vectors: npt.NDArray[np.float32],
    doc_vectors: npt.NDArray[np.float32],
    top: Sequence[Sequence[int]],
    docs: int,
    weight: float,
) -> npt.NDArray[np.float32]:
    """Every query vector refined by its own top `docs` documents (rows of `top` are corpus positions)."""
    refined = [
        rocchio(query, list(doc_vectors[list(positions[:docs])]), weight)
        for query, positions in zip(query_vectors, top, strict=True)
    ]
    return np.stack(refined)


def choose(grid: Sequence[dict[str, Any]], baseline_ndcg: float) -> dict[str, Any] | None:
    """The best Recall@100 among settings that keep nDCG@10 at least at the baseline's."""
    keeping = [g for g in grid if g["ndcg@10"] >= baseline_ndcg]
    if not keeping:
        return None
    return max(keeping, key=lambda g: (g["recall@100"], g["ndcg@10"], -g["docs"], -g["weight"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a dev-split bi-encoder (never test-tuned)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/prf_fit.json"))
    args = parser.parse_args(argv)
    if not args.model.is_dir():
        parser.error(f"--model {args.model} is not a directory")
    configure_logging()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = BeirDataset(args.dataset)
    documents = data.corpus()
    doc_ids = [d.doc_id for d in documents]
    queries = data.queries()
    train_qrels = data.qrels("train")
    _, dev_ids = split_train_dev(train_qrels)
    qrels = {q: train_qrels[q] for q in dev_ids}
    encoder = BiEncoder.load(args.model, max_length=args.max_length)
    doc_vectors = encoder.encode_documents([d.model_text() for d in documents], show_progress=True)
    query_vectors = encoder.encode_queries([queries[q].text for q in dev_ids])
    position = {d: i for i, d in enumerate(doc_ids)}

    def evaluate(vectors: npt.NDArray[np.float32]) -> tuple[dict[str, float], list[list[int]]]:
        runs = exact_search(vectors, doc_vectors, doc_ids, 100)
        top = [[position[d] for d in run] for run in runs]
        return retrieval_metrics(qrels, dict(zip(dev_ids, runs, strict=True))), top

    baseline, top = evaluate(query_vectors)
    grid: list[dict[str, Any]] = []
    for docs in DOCS_GRID:
        for weight in WEIGHT_GRID:
            figures, _ = evaluate(refine_all(query_vectors, doc_vectors, top, docs, weight))
            grid.append({"docs": docs, "weight": weight, **{k: round(v, 4) for k, v in figures.items()}})
            logger.info("prf docs=%d weight=%.1f: %s", docs, weight, grid[-1])
    record = {
        "fit": "prf",
        "git_sha": git_sha(),
        "encoder": encoder.identity,
        "model": str(args.model),
        "dev_queries": len(dev_ids),
        "baseline": {k: round(v, 4) for k, v in baseline.items()},
        "grid": grid,
        "chosen": choose(grid, round(baseline["ndcg@10"], 4)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("baseline", "chosen")}))


if __name__ == "__main__":
    main()
