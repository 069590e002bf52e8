"""Does a pair's score depend on the pairs scored with it? Every engine the reranker serves, measured.

The pairs: each of `--queries` SciFact test queries with its top `--depth` hybrid candidates (the cached first
stage of training.cross_encoder.mine). Each pair is scored twice per engine:

- alone: a call of its own;
- mixed: every pair shuffled across queries, cut into calls of random sizes (1 to 128 pairs), with
  `--clients` callers at once. In process the calls mix queries; through Triton each call is one query's
  pairs (as `TritonScorer` sends them), and the dynamic batcher mixes concurrent calls into shared passes.

Engines: ONNX Runtime over the export's default int8 scheme and over fp32, and the bfloat16 torch program,
each with the pass shapes the runtime serves on this host; and a real tritonserver hosting the int8 model.
Writes `bench/results/score_invariance.json`: one row per engine with its max |alone - mixed| and this CPU's
flags (bfloat16 kernels differ between hosts with AMX, AVX512-BF16 or neither), and a Markdown table beside.

Example:
    python bench/score_invariance.py --checkpoint var/checkpoints/ce-lw-mean-pq300-e1/epoch-1
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


def in_process_runner(runtime: CrossEncoderRuntime, pairs: list[Pair], clients: int) -> CallRunner:
    def run(calls: list[list[int]]) -> list[Scores]:
        def one(call: list[int]) -> Scores:
            return runtime.score_pairs([pairs[i][0] for i in call], [pairs[i][1] for i in call])

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
        f"{record['queries']} SciFact test queries x their top {record['depth']} candidates "
        f"({record['pairs']} pairs), each scored alone and in shuffled calls of 1-{MAX_CALL} pairs from "
        f"{record['clients']} concurrent callers; {record['cpu']} ({', '.join(record['cpu_flags'])}), commit "
        f"{record['git_sha'][:7]}. The reranker promises at most 1e-3.",
        "",
        "| engine | pass shape | max abs diff |",
        "|---|---|---:|",
    ]
    lines += [f"| {r['engine']} | {r['pass_shape']} | {r['max_abs_diff']:.3g} |" for r in record["engines"]]
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
    parser.add_argument("--no-triton", action="store_true", help="skip the tritonserver row")
    parser.add_argument("--out", type=Path, default=Path("bench/results/score_invariance"))
    args = parser.parse_args()
    configure_logging()

    sets = rerank_sets(args.dataset, queries=args.queries, depth=args.depth)
    pairs: list[Pair] = [(one.query, text) for one in sets for text in one.texts]
    query_of = [number for number, one in enumerate(sets) for _ in one.texts]

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-invariance-") as tmp:
        int8 = export_cross_encoder(args.checkpoint, Path(tmp) / "int8", max_length=args.max_length)
        fp32 = export_cross_encoder(
            args.checkpoint, Path(tmp) / "fp32", max_length=args.max_length, quantization="none"
        )
        cases = [
            (f"onnx {DEFAULT_QUANTIZATION}", int8, "onnx", "single"),
            ("onnx fp32", fp32, "onnx", "single"),
            ("onnx fp32", fp32, "onnx", "bucketed"),
            ("torch bfloat16", int8, "torch", "single"),
            ("torch bfloat16", int8, "torch", "bucketed"),
        ]
        for engine, artifact, kind, shape in cases:
            runtime = CrossEncoderRuntime.load(artifact, engine=kind, pass_shape=shape)
            worst = measure(
                engine, in_process_runner(runtime, pairs, args.clients), pairs, query_of, args.seed
            )
            runtime.close()
            rows.append({"engine": engine, "pass_shape": shape, "max_abs_diff": worst})
        if not args.no_triton:
            from operations.triton_repository import assemble_model_repository
            from operations.tritonserver import TritonServer

            repository = assemble_model_repository(
                Path(tmp) / "models", artifact_root=int8.parent, artifact_version=int8.name, engine="onnx"
            )
            with TritonServer(repository, work_dir=Path(tmp) / "triton", startup_timeout=300.0) as server:
                runner = triton_runner(server.grpc_url, pairs, args.clients * 4)
                worst = measure("triton onnx", runner, pairs, query_of, args.seed)
            rows.append({"engine": f"triton onnx {DEFAULT_QUANTIZATION}", "pass_shape": "single (auto)",
                         "max_abs_diff": worst})  # fmt: skip
    flags = cpu_flags()
    record = {
        "bench": "score_invariance",
        "git_sha": git_sha(),
        "cpu": cpu_model(),
        "cpu_flags": flags,
        "checkpoint": str(args.checkpoint),
        "queries": len(sets),
        "depth": args.depth,
        "pairs": len(pairs),
        "clients": args.clients,
        "engines": [row | {"cpu_flags": flags} for row in rows],
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(record))
    print(_markdown(record))


if __name__ == "__main__":
    main()
