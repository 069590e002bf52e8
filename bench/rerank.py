"""Reranker: the project's scorer against what a user would otherwise pick, on the same 100-pair sets.

Each SciFact test query's top-100 hybrid candidates (the cached first stage of training.cross_encoder.mine)
form one 100-pair set. Every set is scored by every scorer, in an order rotated per set so that the shared
machine's noise falls on all of them alike; the first `--warmup` sets are dropped from the timings. Scorers:

- `onnx`: the project's in-process ONNX engine, `CrossEncoderRuntime.score` on the served artifact (int8
  ONNX), as the reranker's `--backend onnx` serves it by default: each pair a pass of its own (so its score
  does not depend on the other pairs), one single-threaded worker per core.
- `torch_bf16`: the project's in-process torch engine (`--backend torch`): the same artifact's bfloat16
  `torch.export` program, through the same runtime and defaults.
- `triton` (with `--triton`): the same artifact behind a real tritonserver, through `TritonScorer`, its
  instances running the engine `--triton-engine` names (auto, the default: the bf16 program on a CPU with
  AMX-BF16 when the Triton environment has PyTorch, else int8 ONNX).
- `st`: sentence-transformers `CrossEncoder.predict` built from the same torch checkpoint. The project's model
  mean-pools the body's token states and applies a linear head; `CrossEncoder(modules=[Transformer, Pooling
  (mean), Dense(384 -> 1, identity, output "scores")])` is exactly that architecture, and its scores are
  checked against the project's torch model (max abs difference recorded).
- `st_bf16`: the same sentence-transformers model cast to bfloat16: what a user of sentence-transformers
  could do by hand, for comparison (not the goal's baseline, which is `CrossEncoder.predict` as it loads).
- `torch`: the project's fp32 torch model, batched (training.cross_encoder.evaluate.score_pairs).
- `per_pair`: the seed's loop, one fp32 torch forward per (query, document) pair.

The fp32 reference for the nDCG delta and the score agreement is `torch` when it runs, else `per_pair` (the
same fp32 model, one pair at a time). The goal keys (`rerank_speedup_vs_st`, `rerank_ndcg_delta`) are the
figures of the engine the reranker's default, `--backend auto`, picks for this artifact on this CPU
(`model_runtimes.cross_encoder.manifest.choose_engine`); every scorer's own ratio and delta are in its row.

Per scorer: pairs/s (pairs per set / median set time; the all-pairs / all-seconds figure beside it),
p50/p95 of one 100-pair set, and nDCG@10 of the
candidates re-ranked by its scores alone (depth 100) over every query scored.

Example:
    python bench/rerank.py --dataset /work/shared/data/scifact \
        --artifact var/models/cross-encoder-candidates/ce-lw-mean-e1/v20261127T094147Z \
        --checkpoint var/checkpoints/ce-lw-mean-e1/epoch-1 --queries 100 --triton
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from model_runtimes.hardware import cpu_flags, cpu_model
from search_common.logging_setup import configure_logging
from training.common.metrics import ndcg_at_10, ranking_to_run
from training.cross_encoder.evaluate import score_pairs
from training.cross_encoder.mine import (
    DEFAULT_CACHE,
    DEFAULT_INDEXES,
    first_stage_candidates,
    labelled_queries,
)
from training.cross_encoder.model import CrossEncoder, load_cross_encoder
from training.cross_encoder.sentence_transformers_model import sentence_transformers_cross_encoder

logger = logging.getLogger(__name__)

SetScorer = Callable[[str, list[str]], npt.NDArray[np.float32]]


def percentile_ms(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)) * 1000.0, 2)


def per_pair_scorer(model: CrossEncoder, tokenizer: Any, max_length: int) -> SetScorer:
    """The seed's loop: one fp32 forward per pair."""

    def score(query: str, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.empty(len(texts), dtype=np.float32)
        with torch.inference_mode():
            for i, text in enumerate(texts):
                enc = tokenizer(
                    query, text, truncation="only_second", max_length=max_length, return_tensors="pt"
                )
                out[i] = float(model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])[0, 0])
        return out

    return score


@contextlib.contextmanager
def triton_scorer(artifact: Path, intra_op_threads: int, engine: str) -> Iterator[SetScorer]:
    """A real tritonserver serving the artifact, and a blocking wrapper over `TritonScorer.score`."""
    from operations.triton_repository import assemble_model_repository
    from operations.tritonserver import TritonServer
    from reranker_service.backends.triton import TritonScorer

    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        repo = assemble_model_repository(
            Path(tmp) / "models",
            artifact_root=artifact.parent,
            artifact_version=artifact.name,
            intra_op_threads=intra_op_threads,
            engine=engine,
        )
        with TritonServer(repo, startup_timeout=300.0) as server:
            loop = asyncio.new_event_loop()
            scorer = TritonScorer(server.grpc_url, timeout_seconds=60.0)
            loop.run_until_complete(scorer.start())

            def score(query: str, texts: list[str]) -> npt.NDArray[np.float32]:
                return loop.run_until_complete(scorer.score(query, texts))

            try:
                yield score
            finally:
                loop.run_until_complete(scorer.close())
                loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    general = parser.add_argument_group("general")
    general.add_argument("--out", type=Path, default=Path("bench/results/rerank.json"))
    general.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    general.add_argument("--warmup", type=int, default=2, help="sets dropped from the timings")
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", type=Path, default=Path("/work/shared/data/scifact"))
    data.add_argument("--queries", type=int, default=100, help="first N test queries (sorted ids)")
    data.add_argument("--depth", type=int, default=100, help="pairs per set")
    model = parser.add_argument_group("model")
    model.add_argument("--artifact", type=Path, required=True, help="served artifact version dir")
    model.add_argument("--checkpoint", type=Path, required=True, help="its torch checkpoint")
    model.add_argument("--max-length", type=int, default=128)
    model.add_argument("--batch-size", type=int, default=32, help="pairs per batch of onnx, st, torch")
    model.add_argument("--scorers", nargs="+", default=["onnx", "torch_bf16", "st", "st_bf16", "per_pair"])
    model.add_argument("--triton", action="store_true", help="also score through a real tritonserver")
    model.add_argument(
        "--triton-engine", choices=["auto", "onnx", "torch"], default="auto", help="the Triton model's ENGINE"
    )
    args = parser.parse_args()
    configure_logging()
    torch.set_num_threads(args.threads)

    from model_runtimes.cross_encoder.manifest import choose_engine, read_cross_encoder_manifest
    from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime

    data_set = BeirDataset(args.dataset)
    documents = {d.doc_id: d for d in data_set.corpus()}
    queries = {q.query_id: q.text for q in data_set.queries().values()}
    qrels_all = data_set.qrels("test")
    candidates = first_stage_candidates(
        data_set.corpus_path,
        labelled_queries(args.dataset),
        cache_dir=DEFAULT_CACHE,
        index_root=DEFAULT_INDEXES / data_set.name,
    )
    query_ids = [q for q in sorted(qrels_all) if q in candidates][: args.queries]
    qrels = {q: qrels_all[q] for q in query_ids}
    sets = {q: [documents[d].model_text() for d in candidates[q][: args.depth]] for q in query_ids}

    # The reranker's defaults: single passes, one single-threaded worker per core.
    runtime = CrossEncoderRuntime.load(args.artifact, engine="onnx")
    runtime_bf16 = (
        CrossEncoderRuntime.load(args.artifact, engine="torch") if "torch_bf16" in args.scorers else None
    )
    # The scorer whose figures are the goal keys: the engine `--backend auto` serves this artifact with here.
    auto = choose_engine("auto", read_cross_encoder_manifest(args.artifact, verify=False))
    in_process = {"onnx": "onnx", "torch": "torch_bf16"}[auto]
    model_fp32, tokenizer = load_cross_encoder(args.checkpoint)
    model_fp32.eval()
    st_model = sentence_transformers_cross_encoder(args.checkpoint, args.max_length)
    st_bf16 = sentence_transformers_cross_encoder(args.checkpoint, args.max_length).to(torch.bfloat16)
    identity = torch.nn.Identity()

    def st_scorer(model: Any) -> SetScorer:
        def score(query: str, texts: list[str]) -> npt.NDArray[np.float32]:
            predicted = model.predict(
                [(query, x) for x in texts],
                batch_size=args.batch_size,
                activation_fn=identity,
                show_progress_bar=False,
                convert_to_tensor=True,
            )
            return np.asarray(predicted.float().numpy(), dtype=np.float32)

        return score

    scorers: dict[str, SetScorer] = {
        "onnx": lambda q, t: runtime.score(q, t, batch_size=args.batch_size),
        "st": st_scorer(st_model),
        "st_bf16": st_scorer(st_bf16),
        "torch": lambda q, t: score_pairs(
            model_fp32,
            tokenizer,
            [(q, x) for x in t],
            max_length=args.max_length,
            batch_size=args.batch_size,
        ),
        "per_pair": per_pair_scorer(model_fp32, tokenizer, args.max_length),
    }
    if runtime_bf16 is not None:
        scorers["torch_bf16"] = lambda q, t: runtime_bf16.score(q, t, batch_size=args.batch_size)
    names = [n for n in args.scorers if n in scorers]
    with contextlib.ExitStack() as stack:
        if args.triton:
            scorers["triton"] = stack.enter_context(
                triton_scorer(args.artifact, 0, args.triton_engine)  # the model's defaults, as served
            )
            names.append("triton")
        seconds: dict[str, list[float]] = {n: [] for n in names}
        scores: dict[str, dict[str, list[float]]] = {n: {} for n in names}

        def write(done_ids: list[str]) -> dict[str, Any]:
            """The record for the sets scored so far, written after every set (a stopped run leaves one)."""
            timed_ids = done_ids[args.warmup :]
            timed_pairs = sum(len(sets[q]) for q in timed_ids)
            qrels_done = {q: qrels[q] for q in done_ids}
            first_run = ranking_to_run({q: list(candidates[q][: args.depth]) for q in done_ids})
            rows: dict[str, dict[str, Any]] = {}
            for name in names:
                ranked = {
                    q: [
                        d
                        for _, d in sorted(
                            zip(scores[name][q], candidates[q][: args.depth], strict=True),
                            key=lambda t: -t[0],
                        )
                    ]
                    for q in done_ids
                }
                rows[name] = {
                    # From the median set: the load on this shared machine changes during a run, and a
                    # sum of times would weight the slow stretch; the sum-based figure is kept beside it.
                    "pairs_per_s": (
                        round(args.depth / statistics.median(seconds[name]), 1) if seconds[name] else None
                    ),
                    "pairs_per_s_total": (
                        round(timed_pairs / sum(seconds[name]), 1) if seconds[name] else None
                    ),
                    "p50_ms": percentile_ms(seconds[name], 50) if seconds[name] else None,
                    "p95_ms": percentile_ms(seconds[name], 95) if seconds[name] else None,
                    "ndcg@10": round(ndcg_at_10(qrels_done, ranking_to_run(ranked)), 4),
                    "sets": len(seconds[name]),
                    "set_seconds": [round(x, 4) for x in seconds[name]],
                }
            # The fp32 reference: the batched model when it ran, else the per-pair loop (the same model).
            ref_name = next((n for n in ("torch", "per_pair") if n in scores), None)
            agreement: dict[str, float] = {}
            if ref_name is not None:
                ref = scores[ref_name]
                for name in names:
                    diffs = [
                        abs(a - b) for q in done_ids for a, b in zip(scores[name][q], ref[q], strict=True)
                    ]
                    agreement[name] = float(max(diffs))
            record: dict[str, Any] = {
                "bench": "rerank",
                "git_sha": git_sha(),
                "device": f"cpu ({platform.machine()}), {args.threads} threads, shared machine",
                "cpu": cpu_model(),
                "cpu_flags": cpu_flags(),
                "pass_shape": runtime.pass_shape,
                "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "artifact_quantization": runtime._manifest.raw.get("quantization", "unknown"),
                "engines": {
                    "onnx": runtime.description,
                    "torch_bf16": None if runtime_bf16 is None else runtime_bf16.description,
                    "triton": f"ENGINE {args.triton_engine}" if args.triton else None,
                },
                "queries": len(done_ids),
                "complete": len(done_ids) == len(query_ids),
                "pairs_per_set": args.depth,
                "first_stage_ndcg@10": round(ndcg_at_10(qrels_done, first_run), 4),
                "scorers": rows,
                "fp32_reference": ref_name,
                "max_abs_score_diff_vs_torch_fp32": agreement,
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            for row in rows.values():
                if row["pairs_per_s"] and rows.get("st", {}).get("pairs_per_s"):
                    row["speedup_vs_st"] = round(row["pairs_per_s"] / rows["st"]["pairs_per_s"], 2)
                if ref_name is not None:
                    row["ndcg_delta_vs_fp32"] = round(row["ndcg@10"] - rows[ref_name]["ndcg@10"], 4)
            record["in_process_scorer"] = in_process
            chosen = rows.get(in_process, {})
            if "speedup_vs_st" in chosen:
                record["rerank_speedup_vs_st"] = chosen["speedup_vs_st"]
                # The same ratio set by set (both scored the same 100 pairs moments apart), then the median.
                record["rerank_speedup_vs_st_median_of_sets"] = round(
                    statistics.median(s / o for s, o in zip(seconds["st"], seconds[in_process], strict=True)),
                    2,
                )
            if "ndcg_delta_vs_fp32" in chosen:
                record["rerank_ndcg_delta"] = chosen["ndcg_delta_vs_fp32"]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=2) + "\n")
            return record

        for i, q in enumerate(query_ids):
            rotated = names[i % len(names) :] + names[: i % len(names)]
            for name in rotated:
                start = time.perf_counter()
                result = scorers[name](queries[q], sets[q])
                elapsed = time.perf_counter() - start
                if i >= args.warmup:
                    seconds[name].append(elapsed)
                scores[name][q] = [float(s) for s in result]
            write(query_ids[: i + 1])
            logger.info(
                "set %d/%d: %s",
                i + 1,
                len(query_ids),
                {n: round(seconds[n][-1], 3) for n in names if seconds[n]},
            )

    record = write(query_ids)
    print(json.dumps({k: record[k] for k in ("scorers", "max_abs_score_diff_vs_torch_fp32")}, indent=1))


if __name__ == "__main__":
    main()
