"""Cross-encoder number formats and pass shapes: speed against sentence-transformers, quality against fp32,
and whether a pair's score depends on the pairs scored with it.

Exports one checkpoint once per quantisation scheme in `training.cross_encoder.export.QUANTIZATION_SCHEMES`
(each artifact also carries the bfloat16 torch program) and scores the same 100-pair sets (each SciFact test
query's top-100 hybrid candidates, the cached first stage of training.cross_encoder.mine) with every
configuration below, in an order rotated per set so the shared machine's noise falls on all alike; the first
`--warmup` sets are dropped from the timings.

Configurations: an engine (ONNX Runtime over one scheme's `model.onnx`, or the bfloat16 program) and a pass
shape (`model_runtimes.cross_encoder.passes`): `single` and `bucketed` as the runtime serves them (their
defaults: one single-threaded worker per core for single, one worker with every core for bucketed), and
`padded`, the runtime's passes before they were made invariant (length-sorted batches of 32, each padded to
its longest pair, one worker with every core). Baselines: `st`, sentence-transformers `CrossEncoder.predict`
on the same weights in fp32 (the speed baseline), and `torch-fp32`, the project's fp32 model batched (the
quality reference).

Per configuration: pairs/s and its ratio to `st`, nDCG@10 of each set re-ranked by the scores alone and its
delta to `torch-fp32`, the max |score difference| to fp32, and invariance: the max |difference| between a
pair's score alone and in two other calls (its own 100-pair set, and its set's first 10 pairs reversed).

Example:
    python bench/quantization.py --checkpoint var/checkpoints/ce-lw-mean-pq300-e1/epoch-1 --queries 30
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from model_runtimes.cross_encoder.passes import Pass
from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from model_runtimes.hardware import cpu_flags, cpu_model
from search_common.logging_setup import configure_logging
from training.common.metrics import ndcg_at_10
from training.cross_encoder.evaluate import score_pairs
from training.cross_encoder.export import QUANTIZATION_SCHEMES, export_cross_encoder
from training.cross_encoder.mine import rerank_sets
from training.cross_encoder.model import load_cross_encoder
from training.cross_encoder.sentence_transformers_model import sentence_transformers_cross_encoder

logger = logging.getLogger(__name__)

Scores = npt.NDArray[np.float32]
SetScorer = Callable[[str, list[str]], Scores]
Set = tuple[str, str, list[str], list[str]]  # query id, query, candidate texts, candidate ids

SPEED_BASELINE = "st"
REFERENCE = "torch-fp32"
PADDED_BATCH = 32  # the old runtime's default batch
ALONE = 10  # pairs per checked set re-scored alone for the invariance column
CHECKED_SETS = 5
# (row name, scheme or None for the bfloat16 program, pass shape)
CONFIGURATIONS = [
    ("onnx int8-per-channel, padded (before)", "int8-per-channel", "padded"),
    ("onnx int8-per-channel, single", "int8-per-channel", "single"),
    ("onnx int8-per-channel-fp32-ffn-out, single", "int8-per-channel-fp32-ffn-out", "single"),
    ("onnx int8-blockwise-weights, single", "int8-blockwise-weights", "single"),
    ("onnx int8-blockwise-weights, bucketed", "int8-blockwise-weights", "bucketed"),
    ("onnx fp32, single", "none", "single"),
    ("onnx fp32, bucketed", "none", "bucketed"),
    ("torch bf16, padded (before)", None, "padded"),
    ("torch bf16, single", None, "single"),
    ("torch bf16, bucketed", None, "bucketed"),
]


def padded_scorer(runtime: CrossEncoderRuntime) -> SetScorer:
    """The runtime's passes before invariance: length-sorted batches, each padded to its longest pair."""

    def score(query: str, texts: list[str]) -> Scores:
        encodings = runtime._encode([query] * len(texts), texts, runtime.max_length)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        scores = np.empty(len(texts), dtype=np.float32)
        for start in range(0, len(order), PADDED_BATCH):
            members = tuple(order[start : start + PADDED_BATCH])
            width = len(encodings[members[0]].ids)
            scores[list(members)] = runtime._run(Pass(members, width, len(members)), encodings)
        return scores

    return score


def served_scorer(runtime: CrossEncoderRuntime) -> SetScorer:
    """The runtime as the reranker calls it: one call per request's candidates."""

    def score(query: str, texts: list[str]) -> Scores:
        return runtime.score(query, texts, batch_size=PADDED_BATCH)

    return score


def _max_abs(a: Scores, b: Scores) -> float:
    return float(np.abs(a - b).max())


def invariance(scorer: SetScorer, sets: list[Set], in_set: dict[str, Scores]) -> float:
    """Max |score alone - score in a call with other pairs| over the first ALONE pairs of CHECKED_SETS sets:
    in their whole set's call, and in a call of those pairs alone in reverse order."""
    worst = 0.0
    for qid, query, texts, _ in sets[:CHECKED_SETS]:
        head = texts[:ALONE]
        alone = np.concatenate([scorer(query, [text]) for text in head])
        reversed_call = scorer(query, head[::-1])[::-1]
        worst = max(worst, _max_abs(alone, in_set[qid][: len(head)]), _max_abs(alone, reversed_call))
    return worst


def _markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Cross-encoder number formats and pass shapes",
        "",
        f"{record['queries']} SciFact test queries x {record['pairs_per_set']} pairs, {record['cpu']} "
        f"({', '.join(record['cpu_flags'])}), {record['threads']} threads, shared machine, commit "
        f"{record['git_sha'][:7]}. Speed baseline: sentence-transformers `CrossEncoder.predict`, fp32, "
        f"{record['baseline_pairs_per_s']} pairs/s. Quality reference: the same checkpoint in fp32 torch, "
        f"nDCG@10 {record['reference_ndcg@10']}. Invariance: max |score alone - score beside other pairs| "
        "(the reranker promises 1e-3).",
        "",
        "| configuration | pairs/s | x ST | nDCG@10 | delta vs fp32 | max abs diff vs fp32 | invariance |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in record["configurations"].items():
        lines.append(
            f"| {name} | {row['pairs_per_s']} | {row['speedup_vs_st']} | {row['ndcg@10']} "
            f"| {row['ndcg_delta']:+.4f} | {row['max_abs_diff']} | {row['invariance']:.2g} |"
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
    parser.add_argument("--threads", type=int, default=2, help="cores the engines may use")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/quantization"))
    args = parser.parse_args()
    if args.queries <= args.warmup:
        parser.error("--queries must exceed --warmup")
    configure_logging()
    torch.set_num_threads(args.threads)

    qrels = BeirDataset(args.dataset).qrels("test")
    sets: list[Set] = [
        (one.query_id, one.query, one.texts, one.doc_ids)
        for one in rerank_sets(args.dataset, queries=args.queries, depth=args.depth)
    ]
    query_ids = [qid for qid, _, _, _ in sets]

    model, tokenizer = load_cross_encoder(args.checkpoint)
    model.eval()
    st_model = sentence_transformers_cross_encoder(args.checkpoint, args.max_length)
    scorers: dict[str, SetScorer] = {
        REFERENCE: lambda q, texts: score_pairs(
            model, tokenizer, [(q, t) for t in texts], max_length=args.max_length, desc="fp32"
        ),
        SPEED_BASELINE: lambda q, texts: np.asarray(
            st_model.predict([(q, t) for t in texts], batch_size=PADDED_BATCH, show_progress_bar=False),
            dtype=np.float32,
        ),
    }
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        artifacts = {
            scheme: export_cross_encoder(
                args.checkpoint, Path(tmp) / scheme, max_length=args.max_length, quantization=scheme
            )
            for scheme in QUANTIZATION_SCHEMES
        }
        runtimes: list[CrossEncoderRuntime] = []
        for name, scheme, shape in CONFIGURATIONS:
            engine = "torch" if scheme is None else "onnx"
            artifact = artifacts[scheme or "none"]
            if shape == "padded":
                runtime = CrossEncoderRuntime.load(
                    artifact, engine=engine, intra_op_threads=args.threads, batch_workers=1
                )
                scorers[name] = padded_scorer(runtime)
            else:
                runtime = CrossEncoderRuntime.load(
                    artifact,
                    engine=engine,
                    pass_shape=shape,
                    batch_workers=args.threads if shape == "single" else 1,
                )
                scorers[name] = served_scorer(runtime)
            runtimes.append(runtime)
        names = list(scorers)
        scores: dict[str, dict[str, Scores]] = {n: {} for n in names}
        seconds: dict[str, list[float]] = {n: [] for n in names}
        for i, (qid, text, texts, _) in enumerate(sets):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                scores[name][qid] = np.asarray(scorers[name](text, texts), dtype=np.float32)
                if i >= args.warmup:
                    seconds[name].append(time.perf_counter() - start)
            logger.info("set %d/%d", i + 1, len(sets))
        dependence = {name: invariance(scorers[name], sets, scores[name]) for name, _, _ in CONFIGURATIONS}
        for runtime in runtimes:
            runtime.close()

    def ndcg(per_query: dict[str, Scores]) -> float:
        run = {
            qid: {d: float(s) for d, s in zip(ids, per_query[qid], strict=False)} for qid, _, _, ids in sets
        }
        return ndcg_at_10({q: qrels[q] for q in query_ids}, run)

    pairs_per_set = len(sets[0][2])
    rate = {name: pairs_per_set / statistics.median(seconds[name]) for name in names}
    reference_ndcg = ndcg(scores[REFERENCE])
    configurations: dict[str, Any] = {}
    for name, _, _ in CONFIGURATIONS:
        value = ndcg(scores[name])
        configurations[name] = {
            "pairs_per_s": round(rate[name], 1),
            "speedup_vs_st": round(rate[name] / rate[SPEED_BASELINE], 2),
            "ndcg@10": round(value, 4),
            "ndcg_delta": round(value - reference_ndcg, 4),
            "max_abs_diff": round(max(_max_abs(scores[name][q], scores[REFERENCE][q]) for q in query_ids), 4),
            "invariance": float(f"{dependence[name]:.3g}"),
        }  # fmt: skip
    record = {
        "bench": "quantization",
        "git_sha": git_sha(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "threads": args.threads,
        "checkpoint": str(args.checkpoint),
        "queries": len(sets),
        "pairs_per_set": pairs_per_set,
        "baseline_pairs_per_s": round(rate[SPEED_BASELINE], 1),
        "reference_pairs_per_s": round(rate[REFERENCE], 1),
        "reference_ndcg@10": round(reference_ndcg, 4),
        "baseline_ndcg@10": round(ndcg(scores[SPEED_BASELINE]), 4),
        "configurations": configurations,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(record))
    print(_markdown(record))


if __name__ == "__main__":
    main()
