"""Does a pair's score depend on the pairs scored with it? Every engine the reranker serves, measured.

The pairs: each of `--queries` SciFact test queries with its top `--depth` hybrid candidates (the cached first
stage of training.cross_encoder.mine). Each pair is scored twice per engine:

- alone: a call of its own;
- mixed: every pair shuffled across queries, cut into calls of random sizes (1 to 128 pairs), with
  `--clients` callers at once. In process the calls mix queries; through Triton each call is one query's
  pairs (as `TritonScorer` sends them), and the dynamic batcher mixes concurrent calls into shared passes.

Engines (`--engines`): ONNX Runtime over the export's default int8 scheme and over fp32, and the bfloat16
torch program, each with the pass shapes the runtime serves; and a real tritonserver hosting the int8 model.
A pair alone in a bucketed pass still fills its `--bucket-rows` rows, so those are measured on fewer queries.
Writes `bench/results/score_invariance.json`: one row per engine and pass shape (a run replaces the rows it
measured and keeps the others) with its max |alone - mixed|, the pairs it covered and this CPU's flags
(bfloat16 kernels differ between hosts with AMX, AVX512-BF16 or neither), and a Markdown table beside.

Example:
    python bench/score_invariance.py --checkpoint C --engines onnx-int8 onnx-fp32 torch-bf16 triton-int8
    python bench/score_invariance.py --checkpoint C --queries 20 \
        --engines onnx-fp32-bucketed torch-bf16-bucketed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from evaluation.provenance import git_sha
from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from model_runtimes.hardware import cpu_flags, cpu_model
from search_common.logging_setup import configure_logging
from training.cross_encoder.export import DEFAULT_QUANTIZATION, export_cross_encoder
from training.cross_encoder.mine import rerank_sets

logger = logging.getLogger(__name__)

Scores = npt.NDArray[np.float32]
Pair = tuple[str, str]
# Scores a list of calls, each a list of pair indices, with some concurrency; returns one array per call.
CallRunner = Callable[[list[list[int]]], list[Scores]]
MAX_CALL = 128
# name: (engine label, artifact, runtime engine or "triton", pass shape)
ENGINES = {
    "onnx-int8": (f"onnx {DEFAULT_QUANTIZATION}", "int8", "onnx", "single"),
    "onnx-fp32": ("onnx fp32", "fp32", "onnx", "single"),
    "onnx-fp32-bucketed": ("onnx fp32", "fp32", "onnx", "bucketed"),
    "torch-bf16": ("torch bfloat16", "int8", "torch", "single"),
    "torch-bf16-bucketed": ("torch bfloat16", "int8", "torch", "bucketed"),
    "triton-int8": (f"triton onnx {DEFAULT_QUANTIZATION}", "int8", "triton", "single (auto)"),
}


def random_calls(
    count: int, rng: random.Random, *, one_query_per_call: Sequence[int] | None = None
) -> list[list[int]]:
    """Every pair index once, shuffled, cut into calls of 1..MAX_CALL pairs (within one query's pairs if
    `one_query_per_call` gives each pair's query)."""
    if one_query_per_call is None:
        groups = [list(range(count))]
    else:
        by_query: dict[int, list[int]] = {}
        for index, query in enumerate(one_query_per_call):
            by_query.setdefault(query, []).append(index)
        groups = list(by_query.values())
    calls: list[list[int]] = []
    for group in groups:
        rng.shuffle(group)
        start = 0
        while start < len(group):
            size = rng.randint(1, MAX_CALL)
            calls.append(group[start : start + size])
            start += size
    rng.shuffle(calls)
    return calls


def in_process_runner(
    runtime: CrossEncoderRuntime, pairs: list[Pair], clients: int, rows_per_pass: int
) -> CallRunner:
    def run(calls: list[list[int]]) -> list[Scores]:
        def one(call: list[int]) -> Scores:
            queries, texts = [pairs[i][0] for i in call], [pairs[i][1] for i in call]
            return runtime.score_pairs(queries, texts, batch_size=rows_per_pass)

        with ThreadPoolExecutor(clients) as pool:
            return list(tqdm(pool.map(one, calls), total=len(calls), desc="calls", leave=False))

    return run


def triton_runner(url: str, pairs: list[Pair], clients: int) -> CallRunner:
    from reranker_service.backends.triton import TritonScorer

    async def run_all(calls: list[list[int]]) -> list[Scores]:
        scorer = TritonScorer(url, timeout_seconds=120.0, max_pending=clients)
        await scorer.start()
        gate = asyncio.Semaphore(clients)

        async def one(call: list[int]) -> Scores:
            async with gate:
                return await scorer.score(pairs[call[0]][0], [pairs[i][1] for i in call])

        try:
            return list(await asyncio.gather(*(one(call) for call in calls)))
        finally:
            await scorer.close()

    return lambda calls: asyncio.run(run_all(calls))


def measure(name: str, runner: CallRunner, pairs: list[Pair], query_of: list[int], seed: int) -> float:
    """Max |alone - mixed| over every pair."""
    started = time.perf_counter()
    alone = np.concatenate(runner([[i] for i in range(len(pairs))]))
    rng = random.Random(seed)
    one_query = query_of if name.startswith("triton") else None
    calls = random_calls(len(pairs), rng, one_query_per_call=one_query)
    mixed = np.empty(len(pairs), dtype=np.float32)
    for call, scores in zip(calls, runner(calls), strict=True):
        mixed[call] = scores
    worst = float(np.abs(alone - mixed).max())
    logger.info("%s: max |alone - mixed| %.3g over %d pairs (%.0f s)", name, worst, len(pairs),
                time.perf_counter() - started)  # fmt: skip
    return worst


def _markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Score invariance",
        "",
        f"SciFact test queries x their top {record['depth']} candidates, each pair scored alone and in "
        f"shuffled calls of 1-{MAX_CALL} pairs from {record['clients']} concurrent callers (through Triton, "
        f"4x as many); {record['cpu']} ({', '.join(record['cpu_flags'])}). A pair alone in a bucketed pass "
        "still fills all its rows, so those ran on fewer queries. The reranker promises at most 1e-3.",
        "",
        "| engine | pass shape | pairs | max abs diff |",
        "|---|---|---:|---:|",
    ]
    for r in record["engines"]:
        shape = f"{r['pass_shape']} ({r['rows_per_pass']} rows)" if "rows_per_pass" in r else r["pass_shape"]
        lines.append(f"| {r['engine']} | {shape} | {r['pairs']} | {r['max_abs_diff']:.3g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a cross-encoder training checkpoint")
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="which to measure"
    )
    parser.add_argument(
        "--bucket-rows",
        type=int,
        default=8,
        help="rows per bucketed pass (a pair alone still fills them all)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/score_invariance"))
    args = parser.parse_args()
    configure_logging()

    sets = rerank_sets(args.dataset, queries=args.queries, depth=args.depth)
    pairs: list[Pair] = [(one.query, text) for one in sets for text in one.texts]
    query_of = [number for number, one in enumerate(sets) for _ in one.texts]
    flags = cpu_flags()
    measured = {"queries": len(sets), "pairs": len(pairs), "git_sha": git_sha(), "cpu_flags": flags}

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-invariance-") as tmp:
        artifacts = {
            "int8": export_cross_encoder(args.checkpoint, Path(tmp) / "int8", max_length=args.max_length),
            "fp32": export_cross_encoder(
                args.checkpoint, Path(tmp) / "fp32", max_length=args.max_length, quantization="none"
            ),
        }
        for name in args.engines:
            engine, artifact, kind, shape = ENGINES[name]
            if kind == "triton":
                worst = _measure_triton(artifacts[artifact], Path(tmp), pairs, query_of, args)
            else:
                runtime = CrossEncoderRuntime.load(artifacts[artifact], engine=kind, pass_shape=shape)
                rows_per_pass = args.bucket_rows if shape == "bucketed" else 1
                runner = in_process_runner(runtime, pairs, args.clients, rows_per_pass)
                worst = measure(engine, runner, pairs, query_of, args.seed)
                runtime.close()
            extra = {"rows_per_pass": args.bucket_rows} if shape == "bucketed" else {}
            rows.append({"engine": engine, "pass_shape": shape, "max_abs_diff": worst, **measured, **extra})
    record = _merged(args.out.with_suffix(".json"), rows)
    record |= {
        "cpu": cpu_model(),
        "cpu_flags": flags,
        "checkpoint": str(args.checkpoint),
        "depth": args.depth,
        "clients": args.clients,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(record))
    print(_markdown(record))


def _measure_triton(
    artifact: Path, work: Path, pairs: list[Pair], query_of: list[int], args: argparse.Namespace
) -> float:
    from operations.triton_repository import assemble_model_repository
    from operations.tritonserver import TritonServer

    repository = assemble_model_repository(
        work / "models", artifact_root=artifact.parent, artifact_version=artifact.name, engine="onnx"
    )
    with TritonServer(repository, work_dir=work / "triton", startup_timeout=300.0) as server:
        runner = triton_runner(server.grpc_url, pairs, args.clients * 4)
        return measure("triton onnx", runner, pairs, query_of, args.seed)


def _merged(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The record at `path` with `rows` in place of its rows of the same engine and pass shape."""
    record: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"bench": "score_invariance"}
    fresh = {(r["engine"], r["pass_shape"]) for r in rows}
    kept = [r for r in record.get("engines", []) if (r["engine"], r["pass_shape"]) not in fresh]
    record["engines"] = sorted([*kept, *rows], key=lambda r: (r["engine"], r["pass_shape"]))
    return record


if __name__ == "__main__":
    main()
