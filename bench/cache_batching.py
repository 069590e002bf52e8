"""Score cache hit vs miss, and Triton dynamic batching on vs off, on SciFact documents.

Cache: the embedded reranker (`build_local_reranker`, ONNX Runtime + in-process LRU score cache) reranks each
query's first `--cache-depth` SciFact test candidates twice: the first call is a miss (scored, then cached),
the second a hit. Miss and hit alternate query by query, so the machine's noise falls on both; the first
query is warmup. Reports p50/p95 of each and cache_hit_speedup = miss p50 / hit p50.

Batching: two real tritonservers over the same artifact, both up for the whole run, one with the committed
config (dynamic_batching) and one with the dynamic_batching block removed; their model runs `--engine`
(auto by default, as committed). For each of `--clients` concurrency levels, that many grpc.aio clients each
send requests of `--pairs-per-request` pairs for `--seconds` seconds to one server, then to the other, for
`--rounds` rounds in alternating order; throughput is pairs/s over a window, and the speedup at a level is
the median over rounds of the two adjacent windows' ratio.

Example:
    python bench/cache_batching.py \
        --artifact var/models/cross-encoder-candidates/ce-lw-mean-e1/v20261127T094147Z
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from search_common.documents import Document
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)


def ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)) * 1000.0, 3)


def load_sets(dataset: Path, queries: int, depth: int) -> list[tuple[str, list[Document]]]:
    from training.cross_encoder.mine import (
        DEFAULT_CACHE,
        DEFAULT_INDEXES,
        first_stage_candidates,
        labelled_queries,
    )

    data = BeirDataset(dataset)
    documents = {d.doc_id: d for d in data.corpus()}
    texts = {q.query_id: q.text for q in data.queries().values()}
    candidates = first_stage_candidates(
        data.corpus_path,
        labelled_queries(dataset),
        cache_dir=DEFAULT_CACHE,
        index_root=DEFAULT_INDEXES / data.name,
    )
    ids = [q for q in sorted(data.qrels("test")) if q in candidates][:queries]
    return [(texts[q], [documents[d] for d in candidates[q][:depth]]) for q in ids]


async def cache_bench(artifact: Path, sets: list[tuple[str, list[Document]]]) -> dict[str, Any]:
    from reranker_service.bootstrap import build_local_reranker

    reranker = build_local_reranker(artifact, cache="lru")
    miss: list[float] = []
    hit: list[float] = []
    try:
        for i, (query, docs) in enumerate(sets):
            start = time.perf_counter()
            first = await reranker.rerank(query, docs)
            middle = time.perf_counter()
            second = await reranker.rerank(query, docs)
            end = time.perf_counter()
            if not np.allclose(first.scores, second.scores, atol=1e-6) or second.cache_hits != len(docs):
                raise RuntimeError("the second call was not a full cache hit with the miss's scores")
            if i > 0:
                miss.append(middle - start)
                hit.append(end - middle)
    finally:
        await reranker.close()
    return {
        "backend": "onnx in-process, LRU cache",
        "documents_per_request": len(sets[0][1]),
        "requests": len(miss),
        "miss_p50_ms": ms(miss, 50),
        "miss_p95_ms": ms(miss, 95),
        "hit_p50_ms": ms(hit, 50),
        "hit_p95_ms": ms(hit, 95),
        "cache_hit_speedup": round(statistics.median(miss) / statistics.median(hit), 1),
    }


def device_description(instance_kind: str) -> str:
    if instance_kind == "gpu":
        import torch

        return f"gpu ({torch.cuda.get_device_name(0)}), cpu ({platform.machine()})"
    return f"cpu ({platform.machine()}), shared machine"


def without_dynamic_batching(config: str) -> str:
    """config.pbtxt text with the top-level `dynamic_batching { ... }` block removed."""
    start = config.index("dynamic_batching {")
    depth, end = 0, start
    for end in range(start, len(config)):
        if config[end] == "{":
            depth += 1
        elif config[end] == "}":
            depth -= 1
            if depth == 0:
                break
    out = config[:start] + config[end + 1 :]
    if re.search(r"^dynamic_batching", out, flags=re.M):
        raise ValueError("more than one dynamic_batching block")
    return out


async def drive(url: str, pairs: list[tuple[str, str]], clients: int, seconds: float) -> tuple[int, float]:
    """`clients` concurrent grpc.aio clients sending fixed requests for `seconds`; (pairs scored, elapsed)."""
    from tritonclient.grpc import aio as triton_aio

    from reranker_service.backends.triton import infer_pairs
    from search_common import triton_contract as tc

    queries = [q for q, _ in pairs]
    texts = [t for _, t in pairs]
    connections = [triton_aio.InferenceServerClient(url) for _ in range(clients)]
    done = 0
    deadline = 0.0

    async def one(client: triton_aio.InferenceServerClient) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await infer_pairs(client, tc.MODEL_NAME, queries, texts, timeout=120.0)
            done += len(pairs)

    try:
        for c in connections:  # warm each channel
            await infer_pairs(c, tc.MODEL_NAME, queries, texts, timeout=120.0)
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(one(c) for c in connections))
        return done, time.perf_counter() - start
    finally:
        for c in connections:
            await c.close()


def batching_bench(
    artifact: Path,
    pairs: list[tuple[str, str]],
    levels: list[int],
    seconds: float,
    threads: int,
    engine: str = "auto",
    rounds: int = 3,
    instance_kind: str = "cpu",
    score_batch_size: int = 0,
    device: str = "",
) -> dict[str, Any]:
    from operations.triton_repository import assemble_model_repository
    from operations.tritonserver import TritonServer
    from search_common import triton_contract as tc

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        repos: dict[str, Path] = {}
        for mode in ("dynamic", "none"):
            repo = assemble_model_repository(
                Path(tmp) / mode,
                artifact_root=artifact.parent,
                artifact_version=artifact.name,
                intra_op_threads=threads,
                engine=engine,
                instance_kind="gpu" if instance_kind == "gpu" else "cpu",
                score_batch_size=score_batch_size,
                device=device,
            )
            if mode == "none":
                config = repo / tc.MODEL_NAME / "config.pbtxt"
                config.write_text(without_dynamic_batching(config.read_text()))
            repos[mode] = repo
        # Both servers stay up and take turns, window by window, so a change in the shared machine's load
        # falls on both arms of each ratio; the speedup is the median of the paired windows' ratios.
        with contextlib.ExitStack() as servers:
            urls = {
                mode: servers.enter_context(TritonServer(repo, startup_timeout=300.0)).grpc_url
                for mode, repo in repos.items()
            }
            for level in levels:
                for round_ in range(rounds):
                    order = ("dynamic", "none") if (level + round_) % 2 == 0 else ("none", "dynamic")
                    for mode in order:
                        done, elapsed = asyncio.run(drive(urls[mode], pairs, level, seconds))
                        row = {
                            "dynamic_batching": mode == "dynamic",
                            "clients": level,
                            "round": round_,
                            "pairs_per_request": len(pairs),
                            "pairs": done,
                            "seconds": round(elapsed, 2),
                            "pairs_per_s": round(done / elapsed, 1),
                        }
                        logger.info("%s", row)
                        rows.append(row)
    by = {(r["dynamic_batching"], r["clients"], r["round"]): r["pairs_per_s"] for r in rows}
    return {
        "rows": rows,
        "engine": engine,
        "instance_kind": instance_kind,
        "model_device": device or "the instance's",
        "score_batch_size": score_batch_size or "committed",
        "speedup": {
            str(c): round(statistics.median(by[(True, c, i)] / by[(False, c, i)] for i in range(rounds)), 2)
            for c in levels
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    general = parser.add_argument_group("general")
    general.add_argument("--out", type=Path, default=Path("bench/results/cache_batching.json"))
    general.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads in Triton")
    general.add_argument("--skip", choices=["cache", "batching"], default=None)
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", type=Path, default=Path("/work/shared/data/scifact"))
    data.add_argument("--artifact", type=Path, required=True)
    cache = parser.add_argument_group("cache")
    cache.add_argument("--cache-queries", type=int, default=9, help="first is warmup")
    cache.add_argument("--cache-depth", type=int, default=100, help="documents per rerank request")
    batching = parser.add_argument_group("batching")
    batching.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    batching.add_argument("--pairs-per-request", type=int, default=8)
    batching.add_argument("--seconds", type=float, default=10.0, help="load window per setting and round")
    batching.add_argument("--rounds", type=int, default=5, help="paired windows per client count")
    batching.add_argument(
        "--engine", choices=["auto", "onnx", "torch"], default="auto", help="the Triton model's ENGINE"
    )
    batching.add_argument(
        "--instance-kind", choices=["cpu", "gpu"], default="cpu", help="the model's KIND_CPU or KIND_GPU"
    )
    batching.add_argument(
        "--score-batch-size", type=int, default=0, help="pairs per forward pass (0: the committed value)"
    )
    batching.add_argument(
        "--model-device", default="", help="the model's DEVICE: empty follows the instance kind, or cuda[:N]"
    )
    args = parser.parse_args()
    configure_logging()
    sets = load_sets(args.dataset, max(args.cache_queries, 1), args.cache_depth)
    record: dict[str, Any] = {
        "bench": "cache_batching",
        "git_sha": git_sha(),
        "device": device_description("gpu" if args.model_device or args.instance_kind == "gpu" else "cpu"),
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    if args.skip != "cache":
        record["cache"] = asyncio.run(cache_bench(args.artifact, sets))
        logger.info("cache: %s", record["cache"])
    if args.skip != "batching":
        query, docs = sets[0]
        pairs = [(query, d.model_text()) for d in docs[: args.pairs_per_request]]
        record["batching"] = batching_bench(
            args.artifact,
            pairs,
            args.clients,
            args.seconds,
            args.threads,
            args.engine,
            args.rounds,
            args.instance_kind,
            args.score_batch_size,
            args.model_device,
        )
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record.get(k) for k in ("cache", "batching")}, indent=1))


if __name__ == "__main__":
    main()
