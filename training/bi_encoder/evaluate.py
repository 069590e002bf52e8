"""Dense retrieval on the dev queries (the held-out side of the train split) for choosing recipes.

Embeds the whole corpus with the given encoder, ranks it exactly (inner product of unit vectors) for each
dev query and reports nDCG@10 and Recall@100. Never touches the test split.

Example:
    python -m training.bi_encoder.evaluate --dataset /work/shared/data/scifact \\
        --model packaged --model var/models/bi-encoder/v20261127T110200Z --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ir_measures
import numpy as np
import numpy.typing as npt
import torch
from ir_measures import R, nDCG

from corpora.beir import BeirDataset
from model_runtimes.bi_encoder import BiEncoder
from search_common.logging_setup import configure_logging
from training.common.splits import split_train_dev

logger = logging.getLogger(__name__)

__all__ = ["dev_report", "exact_search", "retrieval_metrics"]


def exact_search(
    query_vectors: npt.NDArray[np.float32],
    doc_vectors: npt.NDArray[np.float32],
    doc_ids: Sequence[str],
    k: int,
) -> list[dict[str, float]]:
    """Top-k doc ids by inner product for each query, as {doc_id: score} (ties broken by corpus order)."""
    if k <= 0:
        raise ValueError(f"exact_search: k must be positive, got {k}")
    scores = query_vectors @ doc_vectors.T
    k = min(k, len(doc_ids))
    runs: list[dict[str, float]] = []
    for row in scores:
        top = np.argsort(-row, kind="stable")[:k]
        runs.append({doc_ids[i]: float(row[i]) for i in top})
    return runs


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Mean nDCG@10 and Recall@100 over the judged queries; a query missing from the run counts as 0."""
    if not qrels:
        raise ValueError("retrieval_metrics: no judged queries")
    judged = {q: dict(d) for q, d in qrels.items()}
    scored = {q: dict(run.get(q, {})) for q in judged}
    measures = [nDCG @ 10, R @ 100]
    sums = {str(m): 0.0 for m in measures}
    for metric in ir_measures.iter_calc(measures, judged, scored):
        sums[str(metric.measure)] += metric.value
    return {"ndcg@10": sums["nDCG@10"] / len(judged), "recall@100": sums["R@100"] / len(judged)}


def dev_report(encoder: BiEncoder, dataset: Path, *, dev_fraction: float = 0.2) -> dict[str, Any]:
    """Dense full-corpus retrieval figures of `encoder` on the dev side of the train split."""
    data = BeirDataset(dataset)
    documents = data.corpus()
    queries = data.queries()
    train_qrels = data.qrels("train")
    _, dev_ids = split_train_dev(train_qrels, dev_fraction=dev_fraction)
    wall0 = time.perf_counter()
    doc_vectors = encoder.encode_documents([d.model_text() for d in documents], show_progress=True)
    query_vectors = encoder.encode_queries([queries[q].text for q in dev_ids])
    runs = exact_search(query_vectors, doc_vectors, [d.doc_id for d in documents], 100)
    figures = retrieval_metrics({q: train_qrels[q] for q in dev_ids}, dict(zip(dev_ids, runs, strict=True)))
    return {
        "encoder": encoder.identity,
        "dev_queries": len(dev_ids),
        **figures,
        "minutes": (time.perf_counter() - wall0) / 60,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="a model directory, or 'packaged'")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    configure_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    for model in args.model:
        encoder = BiEncoder.load(None if model == "packaged" else Path(model), max_length=args.max_length)
        print(json.dumps(dev_report(encoder, args.dataset), sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
