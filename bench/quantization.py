"""Quantisation schemes of the cross-encoder export: speed against agreement with the fp32 model.

Exports one checkpoint once per scheme in `training.cross_encoder.export.QUANTIZATION_SCHEMES` and scores the
same 100-pair sets (each SciFact test query's top-100 hybrid candidates, the cached first stage of
training.cross_encoder.mine) with each artifact through the reranker's own `CrossEncoderRuntime`, and with
the fp32 torch model (batched, length-sorted: the reference). Scorers run in an order rotated per set so the
shared machine's noise falls on all of them alike; the first `--warmup` sets are dropped from the timings.

Per scheme: p50 seconds per set and pairs/s, speed-up over the fp32 torch model, mean per-query Spearman and
max |score difference| against fp32, nDCG@10 of the set re-ranked by the scores alone and its delta to fp32,
and batch dependence: the max |difference| between a pair's score in its 100-pair set and scored alone
(per-tensor dynamic activation quantisation makes a score depend on the batch it came in, which a score cache
then freezes).

Example:
    python bench/quantization.py --checkpoint var/checkpoints/ce-lw-mean-pq300-e1/epoch-1 --queries 30
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy.stats import spearmanr

from search_common.beir import BeirDataset
from search_common.cross_encoder_runtime import CrossEncoderRuntime
from search_common.logging_setup import configure_logging
from search_common.provenance import git_sha
from training.common.metrics import ndcg_at_10
from training.cross_encoder.evaluate import score_pairs
from training.cross_encoder.export import QUANTIZATION_SCHEMES, export_cross_encoder
from training.cross_encoder.mine import (
    DEFAULT_CACHE,
    DEFAULT_INDEXES,
    first_stage_candidates,
    labelled_queries,
)
from training.cross_encoder.model import load_cross_encoder

logger = logging.getLogger(__name__)

REFERENCE = "torch-fp32"
ALONE = 8  # pairs re-scored one at a time for the batch-dependence column


def _max_abs(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(np.max(np.abs(a - b)))


def _batch_dependence(
    runtime: CrossEncoderRuntime,
    sets: list[tuple[str, str, list[str], list[str]]],
    in_set: dict[str, npt.NDArray[np.float32]],
) -> float:
    """Max |score in its 100-pair set - the same pair scored alone| over each set's first ALONE pairs."""
    worst = 0.0
    for qid, text, texts, _ in sets:
        alone = np.concatenate([runtime.score(text, [t]) for t in texts[:ALONE]])
        worst = max(worst, _max_abs(alone, in_set[qid][:ALONE]))
    return worst


def _markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Cross-encoder quantisation schemes",
        "",
        f"{record['queries']} SciFact test queries x {record['pairs_per_set']} pairs, {record['device']}, "
        f"commit {record['git_sha'][:7]}. Reference: the same checkpoint in fp32 torch (batched, sorted).",
        "",
        "| scheme | pairs/s | x fp32 torch | Spearman vs fp32 | max abs diff | nDCG@10 | delta | "
        "batch dependence | MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in record["schemes"].items():
        lines.append(
            f"| {name} | {r['pairs_per_s']} | {r['speedup_vs_fp32_torch']} | {r['spearman']} "
            f"| {r['max_abs_diff']} | {r['ndcg@10']} | {r['ndcg_delta']:+.4f} | {r['batch_dependence']} "
            f"| {r['size_mb']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a cross-encoder training checkpoint")
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/quantization"))
    args = parser.parse_args()
    if args.queries <= args.warmup:
        parser.error("--queries must exceed --warmup")
    configure_logging()
    torch.set_num_threads(args.threads)

    data = BeirDataset(args.dataset)
    documents = {d.doc_id: d for d in data.corpus()}
    queries = data.queries()
    qrels = data.qrels("test")
    candidates = first_stage_candidates(
        args.dataset / "corpus.jsonl",
        labelled_queries(args.dataset),
        cache_dir=DEFAULT_CACHE,
        index_root=DEFAULT_INDEXES / args.dataset.name,
    )
    query_ids = sorted(qrels)[: args.queries]
    sets = [
        (q, queries[q].text, [documents[d].model_text() for d in candidates[q][: args.depth]], candidates[q])
        for q in query_ids
    ]

    model, tokenizer = load_cross_encoder(args.checkpoint)
    model.eval()

    def torch_scorer(query: str, texts: list[str]) -> npt.NDArray[np.float32]:
        pairs = [(query, t) for t in texts]
        return score_pairs(model, tokenizer, pairs, max_length=args.max_length, desc="fp32")

    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        runtimes: dict[str, CrossEncoderRuntime] = {}
        sizes: dict[str, float] = {}
        for scheme in QUANTIZATION_SCHEMES:
            artifact = export_cross_encoder(
                args.checkpoint, Path(tmp) / scheme, max_length=args.max_length, quantization=scheme
            )
            runtimes[scheme] = CrossEncoderRuntime.load(artifact, intra_op_threads=args.threads)
            sizes[scheme] = round((artifact / "model.onnx").stat().st_size / 1e6, 1)
        scorers = {REFERENCE: torch_scorer} | {name: rt.score for name, rt in runtimes.items()}
        names = list(scorers)
        scores: dict[str, dict[str, npt.NDArray[np.float32]]] = {n: {} for n in names}
        seconds: dict[str, list[float]] = {n: [] for n in names}
        for i, (qid, text, texts, _) in enumerate(sets):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                scores[name][qid] = np.asarray(scorers[name](text, texts), dtype=np.float32)
                if i >= args.warmup:
                    seconds[name].append(time.perf_counter() - start)
            logger.info("set %d/%d", i + 1, len(sets))
        dependence = {name: _batch_dependence(rt, sets[:5], scores[name]) for name, rt in runtimes.items()}

    def ndcg(per_query: dict[str, npt.NDArray[np.float32]]) -> float:
        run = {
            qid: {d: float(s) for d, s in zip(ids, per_query[qid], strict=False)} for qid, _, _, ids in sets
        }
        return ndcg_at_10({q: qrels[q] for q in query_ids}, run)

    pairs_per_set = len(sets[0][2])
    reference_ndcg = ndcg(scores[REFERENCE])
    reference_p50 = statistics.median(seconds[REFERENCE])
    schemes: dict[str, Any] = {}
    for name in runtimes:
        p50 = statistics.median(seconds[name])
        agreement = [float(spearmanr(scores[name][q], scores[REFERENCE][q]).statistic) for q in query_ids]
        value = ndcg(scores[name])
        schemes[name] = {
            "pairs_per_s": round(pairs_per_set / p50, 1),
            "p50_s": round(p50, 4),
            "speedup_vs_fp32_torch": round(reference_p50 / p50, 2),
            "spearman": round(statistics.mean(agreement), 4),
            "max_abs_diff": round(max(_max_abs(scores[name][q], scores[REFERENCE][q]) for q in query_ids), 4),
            "ndcg@10": round(value, 4),
            "ndcg_delta": round(value - reference_ndcg, 4),
            "batch_dependence": round(dependence[name], 5),
            "size_mb": sizes[name],
        }  # fmt: skip
    record = {
        "bench": "quantization",
        "git_sha": git_sha(),
        "device": f"cpu ({platform.machine()}), {args.threads} threads, shared machine",
        "checkpoint": str(args.checkpoint),
        "queries": len(sets),
        "pairs_per_set": pairs_per_set,
        "reference": {"name": REFERENCE, "pairs_per_s": round(pairs_per_set / reference_p50, 1),
                      "ndcg@10": round(reference_ndcg, 4)},
        "schemes": schemes,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(record))
    print(_markdown(record))


if __name__ == "__main__":
    main()
