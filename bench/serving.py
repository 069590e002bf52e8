"""Serving overhead: end to end through the gateway against the same pipeline called in-process.

Starts the SciFact stack as real processes in three topologies side by side, each with its own gateway (the
dense index's encoder as the query encoder, all on loopback, via operations.processes.ServiceStack):
`in_gateway`, the gateway searching the indexes in its own process (`--index`, search-demo's default), and
running the reranker there too (`--local-reranker`) for a variant that reranks;
`one_process`, one retriever process serving every dense shard and the BM25 shard
(`retriever_service.shard_group`); and `per_shard`, one retriever process per shard. In this process it runs
the same pipeline over the same index directories, loaded as the gateway loads them
(`retriever_service.bootstrap.load_retrievers` + `gateway.pipeline.SearchPipeline`) with the same query
encoder, so both embed each query once. One more arm runs that pipeline over each shard alone without a query
encoder and with the BiEncoder's single-query memo off (the code before both: each dense shard embeds the
query again). Each query goes once through each arm: `--block` queries back to back through one arm, then
the same through the next, in an order rotated per block; the first `--warmup` queries are dropped. One
query is in flight at a time. Reports p50/p95 of each and the ratios; serving_overhead_p50 = gateway p50 /
in-process p50 - 1 for the in-gateway topology (serving_overhead_p50_one_process and _per_shard for the
others).
`stages` holds the median of each stage the pipeline times (its `StageTime`s in process, the response's
`metadata.timings` through the gateway), so the overhead can be placed: a shard's `retrieve` is its call
as the gateway waits for it (the hop included), its `search` the shard's own work.
With `--load-seconds`, it then drives each topology's gateway with `--load-clients` closed-loop clients over
every test-split query in turn (more distinct queries than the query encoders' 64-entry memo holds, so each
is embedded) and reports sustained QPS, p50/p95, each stage's median, and whether p95 stayed under the
target (the non-reranked SLO, 0.5 s). With `--loaded-seconds` as well, it sends open-loop arrivals at half
the in-gateway topology's sustainable QPS through that gateway and, as many, to the pipeline in process:
serving_overhead_p50_loaded is the ratio of their p50s minus one. For a variant that reranks (the gateway's
default does), `--reranker-backend` runs that reranker in the in-gateway topology's gateway, starts a
reranker process behind the other gateways, and loads the same model in process; run on the default variant,
the record also holds serving_overhead_p50_default. With `--reranker-backend triton` a tritonserver hosts the
cross-encoder (the committed model config), called by the in-gateway reranker and by that reranker process;
the same ONNX engine runs in process, and the record holds serving_overhead_p50_triton.

Example:
    python bench/serving.py \
        --dense var/indexes/scifact/dense-3sh-Flat-dec31c8182f3d744-all-MiniLM-L6-v2_53aa511 \
        --bm25 var/indexes/scifact/bm25-dec31c8182f3d744-006f9ab9 --variant hybrid --queries 60
    python bench/serving.py --dense ... --bm25 ... --variant hybrid10+colbert \
        --reranker-backend late-interaction --reranker-artifact-dir var/models/colbert \
        --token-store var/indexes/scifact-colbert --out bench/results/serving_default.json
    python bench/serving.py --dense ... --bm25 ... --variant hybrid10+ce --reranker-backend triton \
        --reranker-artifact-dir var/models/cross-encoder --out bench/results/serving_triton.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from search.v1 import search_service_pb2, search_service_pb2_grpc

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import VariantBounds, load_variants
from model_runtimes.bi_encoder import default_model_dir
from model_runtimes.hardware import cpu_flags, cpu_model
from operations.loadgen import open_loop, run_open_loop
from operations.processes import ServiceStack
from search_common.artifacts import resolve_version
from search_common.grpc_server import message_size_options
from search_common.logging_setup import configure_logging
from search_common.ports import QUERY_ENCODER_ENGINES, Reranker

logger = logging.getLogger(__name__)

# The small-host topology (search-demo's default): the gateway searches the indexes in its own process. Its
# figures carry the unsuffixed keys; the others' are suffixed with their names.
IN_GATEWAY = "in_gateway"


def ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)) * 1000.0, 2)


async def sustained_load(
    stub: search_service_pb2_grpc.SearchServiceStub, args: argparse.Namespace, texts: list[str]
) -> dict[str, Any]:
    """`--load-clients` closed-loop clients on one channel for `--load-seconds`: QPS and latency."""
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}  # "stage component" -> seconds, from each answer's timings
    errors = 0
    deadline = time.perf_counter() + args.load_seconds

    async def client(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < deadline:
            request = search_service_pb2.SearchRequest(
                query=texts[i % len(texts)], top_k=args.top_k, variant=args.variant
            )
            start = time.perf_counter()
            try:
                response = await stub.Search(request, timeout=args.timeout)
                latencies.append(time.perf_counter() - start)
                for timing in response.metadata.timings:
                    name = f"{timing.stage} {timing.component}".strip()
                    stages.setdefault(name, []).append(timing.duration.ToTimedelta().total_seconds())
            except grpc.aio.AioRpcError:
                errors += 1
            i += args.load_clients

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(args.load_clients)))
    elapsed = time.perf_counter() - start
    p95 = float(np.percentile(latencies, 95))
    return {
        "clients": args.load_clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "errors": errors,
        "qps": round(len(latencies) / elapsed, 2),
        "p50_ms": ms(latencies, 50),
        "p95_ms": round(p95 * 1000.0, 2),
        "p95_target_ms": args.p95_target * 1000.0,
        "p95_under_target": p95 <= args.p95_target,
        "stages_p50_ms": {name: ms(values, 50) for name, values in sorted(stages.items())},
    }


def in_process_reranker(args: argparse.Namespace) -> Reranker | None:
    """The second stage the reranker process serves (`--reranker-backend`), in process: the newest version
    under `--reranker-artifact-dir`, over its version of `--token-store`. Behind Triton, the engine Triton's
    model hosts (the cross-encoder's ONNX graph) runs here without it."""
    if args.reranker_backend == "none":
        return None
    from evaluation.offline_stack import offline_reranker

    artifact = resolve_version(args.reranker_artifact_dir)
    store = None if args.token_store is None else args.token_store / artifact.name
    backend = "onnx" if args.reranker_backend == "triton" else args.reranker_backend
    return offline_reranker(backend, artifact, store)


def reranker_flags(args: argparse.Namespace, triton_url: str | None) -> list[str]:
    """search-reranker's flags for `--reranker-backend`: a reranker process's, or the in-gateway one's."""
    # No score cache: the arms send the same queries, and the in-process reranker has none either.
    argv = ["--backend", args.reranker_backend, "--cache", "none"]
    if triton_url is not None:
        return [*argv, "--triton-url", triton_url]
    argv += ["--artifact-dir", str(args.reranker_artifact_dir)]
    return argv + ([] if args.token_store is None else ["--token-store", str(args.token_store)])


@contextlib.contextmanager
def triton_behind(args: argparse.Namespace, scratch: Path) -> Iterator[str | None]:
    """With `--reranker-backend triton`, a tritonserver serving the newest cross-encoder under
    `--reranker-artifact-dir` with the committed model config (its gRPC URL); else nothing."""
    if args.reranker_backend != "triton":
        yield None
        return
    from operations.triton_repository import assemble_model_repository
    from operations.tritonserver import TritonServer

    artifact = resolve_version(args.reranker_artifact_dir)
    repository = assemble_model_repository(
        scratch / "models", artifact_root=artifact.parent, artifact_version=artifact.name
    )
    with TritonServer(repository, startup_timeout=300.0) as server:
        yield server.grpc_url


async def overhead_under_load(
    gateway: str,
    in_process: Callable[[str], Awaitable[None]],
    texts: list[str],
    rate: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Open-loop arrivals at `rate` (half the gateway's sustainable QPS) through the gateway and through the
    same pipeline in process, in two turns each in alternating order of `--loaded-seconds` / 2; the p50s'
    ratio minus one is serving_overhead_p50_loaded."""
    through_gateway: list[float] = []
    direct: list[float] = []
    failed = 0

    async def timed(text: str) -> float:
        started = time.perf_counter()
        await in_process(text)
        return time.perf_counter() - started

    seconds = args.loaded_seconds / 2
    for turn in range(2):
        for arm in ("gateway", "in_process") if turn == 0 else ("in_process", "gateway"):
            if arm == "gateway":
                answers = await run_open_loop(
                    gateway, texts, rate, seconds, timeout=args.timeout, variant=args.variant
                )
                failed += sum(a.code != "OK" for a in answers)
                through_gateway += [a.seconds for a in answers if a.code == "OK"]
                continue
            direct += await open_loop(rate, seconds, lambda i: timed(texts[i % len(texts)]))
    return {
        "rate_per_s": round(rate, 2),
        "seconds_per_arm": args.loaded_seconds,
        "gateway_failed": failed,
        "gateway_p50_ms": ms(through_gateway, 50),
        "gateway_p95_ms": ms(through_gateway, 95),
        "in_process_p50_ms": ms(direct, 50),
        "in_process_p95_ms": ms(direct, 95),
        "serving_overhead_p50_loaded": round(
            statistics.median(through_gateway) / statistics.median(direct) - 1, 3
        ),
    }


async def measure(
    args: argparse.Namespace, gateways: dict[str, str], texts: list[str], load_texts: list[str]
) -> dict[str, Any]:
    """`gateways`: topology name -> the address of its gateway."""
    from model_runtimes.bi_encoder import BiEncoder
    from model_runtimes.query_encoder_onnx import query_encoder
    from retriever_service.bootstrap import load_index, load_retrievers

    encoder = BiEncoder.load(default_model_dir())
    # What the in-gateway topology loads: each kind's shards searched together (ShardGroup).
    by_kind = load_retrievers([args.dense, args.bm25], encoder=encoder)
    retrievers = {kind: [retriever] for kind, retriever in by_kind.items()}
    # What the gateway runs: the same query encoder, on the same engine.
    reranker = in_process_reranker(args)
    pipeline = SearchPipeline(
        retrievers, reranker, query_encoder=query_encoder(encoder, args.query_encoder_engine)
    )
    # Each shard on its own, as before ShardGroup: every dense shard embeds the query.
    separate = {"dense": load_index(args.dense, encoder=encoder), "bm25": load_index(args.bm25)}
    per_shard_embedding = SearchPipeline(separate, reranker)
    variant = load_variants(None, VariantBounds()).get(args.variant)
    query_depth = variant.retrieval_depth
    in_process: list[float] = []
    no_memo: list[float] = []
    served: dict[str, list[float]] = {topology: [] for topology in gateways}
    # (arm, "stage component") -> seconds per timed query
    stages: dict[tuple[str, str], list[float]] = {}
    timed = False

    def record_stage(arm: str, stage: str, component: str, seconds: float) -> None:
        if timed:
            stages.setdefault((arm, f"{stage} {component}".strip()), []).append(seconds)

    channels = {
        topology: grpc.aio.insecure_channel(address, options=message_size_options())
        for topology, address in gateways.items()
    }
    stubs = {topology: search_service_pb2_grpc.SearchServiceStub(c) for topology, c in channels.items()}
    try:

        def via_gateway(topology: str) -> Callable[[str], Awaitable[None]]:
            async def call(text: str) -> None:
                request = search_service_pb2.SearchRequest(query=text, top_k=args.top_k, variant=args.variant)
                response = await stubs[topology].Search(request, timeout=args.timeout)
                if response.metadata.coverage.degraded:
                    raise RuntimeError(f"degraded gateway answer for {text!r}")
                for timing in response.metadata.timings:
                    seconds = timing.duration.ToTimedelta().total_seconds()
                    record_stage(f"gateway_{topology}", timing.stage, timing.component, seconds)

            return call

        async def direct(text: str) -> None:
            encoder.query_memo_size = 64
            outcome = await pipeline.search(
                SearchQuery(text, args.top_k, variant, query_depth, variant.rerank_depth)
            )
            if outcome.coverage.degraded:
                raise RuntimeError(f"degraded in-process answer for {text!r}")
            for timing in outcome.timings:
                record_stage("in_process", timing.stage, timing.component, timing.seconds)

        async def direct_without_memo(text: str) -> None:
            # Before embedding once and before the BiEncoder's single-query memo: every shard embeds again.
            encoder.query_memo_size = 0
            try:
                outcome = await per_shard_embedding.search(
                    SearchQuery(text, args.top_k, variant, query_depth, variant.rerank_depth)
                )
            finally:
                encoder.query_memo_size = 64
            if outcome.coverage.degraded:
                raise RuntimeError(f"degraded in-process answer for {text!r}")

        arms = [(f"gateway_{t}", via_gateway(t), served[t]) for t in gateways]
        arms += [("in_process", direct, in_process), ("in_process_no_memo", direct_without_memo, no_memo)]
        # Blocks of `--block` queries go through one arm back to back, then the next arm, in an order
        # rotated per block: each arm's services are as warm as a client sending one query after another
        # keeps them, and the machine's drift still falls on every arm. --block 1 alternates per query,
        # which leaves the gateway's processes idle (and, on this VM, cold) while the other arms run.
        blocks = [list(range(i, min(i + args.block, len(texts)))) for i in range(0, len(texts), args.block)]
        for b, block in enumerate(blocks):
            for _, call, bucket in arms[b % len(arms) :] + arms[: b % len(arms)]:
                for i in block:
                    timed = i >= args.warmup
                    start = time.perf_counter()
                    await call(texts[i])
                    elapsed = time.perf_counter() - start
                    if timed:
                        bucket.append(elapsed)
        load = {}
        if args.load_seconds > 0:
            for topology, stub in stubs.items():
                load[topology] = await sustained_load(stub, args, load_texts)
        loaded = None
        if args.loaded_seconds > 0 and IN_GATEWAY in load:
            rate = 0.5 * load[IN_GATEWAY]["qps"]

            async def in_process_search(text: str) -> None:
                await pipeline.search(
                    SearchQuery(text, args.top_k, variant, query_depth, variant.rerank_depth)
                )

            loaded = await overhead_under_load(
                gateways[IN_GATEWAY], in_process_search, load_texts, rate, args
            )
    finally:
        for channel in channels.values():
            await channel.close()
    return {
        "load": load or None,
        "loaded": loaded,
        **({"serving_overhead_p50_loaded": loaded["serving_overhead_p50_loaded"]} if loaded else {}),
        "variant": args.variant,
        "queries": len(in_process),
        "in_process_p50_ms": ms(in_process, 50),
        "in_process_p95_ms": ms(in_process, 95),
        **{
            f"{key}{'' if topology == IN_GATEWAY else '_' + topology}": value
            for topology, times in served.items()
            for key, value in {
                "gateway_p50_ms": ms(times, 50),
                "gateway_p95_ms": ms(times, 95),
                "p50_ratio": round(statistics.median(times) / statistics.median(in_process), 3),
                "p95_ratio": round(float(np.percentile(times, 95) / np.percentile(in_process, 95)), 3),
                "serving_overhead_p50": round(
                    statistics.median(times) / statistics.median(in_process) - 1, 3
                ),
            }.items()
        },
        "in_process_no_memo_p50_ms": ms(no_memo, 50),
        "in_process_no_memo_p95_ms": ms(no_memo, 95),
        "query_memo_speedup_p50": round(statistics.median(no_memo) / statistics.median(in_process), 3),
        "query_memo_speedup_p95": round(float(np.percentile(no_memo, 95) / np.percentile(in_process, 95)), 3),
        "stages_p50_ms": {
            name: {arm: ms(stages[(arm, stage)], 50) for arm, stage in stages if stage == name}
            for name in sorted({stage for _, stage in stages})
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    general = parser.add_argument_group("general")
    general.add_argument("--out", type=Path, default=Path("bench/results/serving.json"))
    general.add_argument("--warmup", type=int, default=5)
    general.add_argument("--timeout", type=float, default=30.0, help="per-request deadline, s")
    general.add_argument(
        "--block", type=int, default=8, help="queries per arm per turn (1: alternate arms per query)"
    )
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", type=Path, default=Path("/work/shared/data/scifact"))
    data.add_argument("--queries", type=int, default=60)
    data.add_argument("--dense", type=Path, required=True, help="dense index version dir (shards inside)")
    data.add_argument("--bm25", type=Path, required=True, help="BM25 index version dir")
    search = parser.add_argument_group("search")
    search.add_argument("--variant", default="hybrid")
    search.add_argument(
        "--reranker-backend",
        default="none",
        help="a reranker for a variant that reranks: a reranker process behind both gateways and the same "
        "model in process (search-reranker --backend; none: no second stage)",
    )
    search.add_argument("--reranker-artifact-dir", type=Path, default=None, help="its artifact root")
    search.add_argument("--token-store", type=Path, default=None, help="its token stores' root")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument(
        "--query-encoder-engine",
        choices=QUERY_ENCODER_ENGINES,
        default="auto",
        help="what embeds queries, at the gateway and in process alike",
    )
    load = parser.add_argument_group("sustained load")
    load.add_argument("--load-seconds", type=float, default=0.0, help="0 skips the load phase")
    load.add_argument("--load-clients", type=int, default=16)
    load.add_argument("--p95-target", type=float, default=0.5, help="s; gateway.metrics.SLO_SECONDS")
    load.add_argument(
        "--loaded-seconds",
        type=float,
        default=0.0,
        help="with --load-seconds: open-loop arrivals at half the one-process gateway's sustainable QPS, "
        "this long through it and as long in process, for serving_overhead_p50_loaded (0 skips)",
    )
    args = parser.parse_args()
    if args.block < 1:
        parser.error(f"--block must be at least 1, got {args.block}")
    if args.reranker_backend != "none" and args.reranker_artifact_dir is None:
        parser.error("--reranker-backend needs --reranker-artifact-dir")
    configure_logging()
    data_set = BeirDataset(args.dataset)
    queries = data_set.queries()
    load_texts = [queries[q].text for q in sorted(data_set.qrels("test"))]
    texts = load_texts[: args.queries]
    python = sys.executable
    with (
        tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp,
        triton_behind(args, Path(tmp)) as triton_url,
        ServiceStack(Path(tmp)) as stack,
    ):
        retriever = [python, "-m", "retriever_service", "--threads", "1"]
        shards = {f"dense-{i}": p for i, p in enumerate(sorted(args.dense.glob("shard-*")))}
        shards["bm25-0"] = args.bm25 / "shard-0"
        started = [stack.spawn(name, [*retriever, "--index", str(path)]) for name, path in shards.items()]
        one = stack.spawn(
            "retriever", [*retriever, "--index", str(args.dense), "--index", str(shards["bm25-0"])]
        )
        for service in [*started, one]:
            service.wait_ready(300.0)
        addresses = {
            "one_process": (one.address, one.address),
            "per_shard": (
                ",".join(s.address for s in started if s.name.startswith("dense")),
                next(s.address for s in started if s.name == "bm25-0"),
            ),
        }
        reranker = None
        flags = [] if args.reranker_backend == "none" else reranker_flags(args, triton_url)
        if flags:
            reranker_argv = [python, "-m", "reranker_service", *flags]
            reranker = stack.start("reranker", reranker_argv, timeout=300.0).address
        # The retrievers run the packaged encoder (no --encoder); the gateway embeds once with the same.
        common = ["--default-deadline", "30", "--query-encoder", str(default_model_dir())]
        common += ["--query-encoder-engine", args.query_encoder_engine]
        # The in-gateway topology runs the reranker in the gateway too (over Triton, it calls Triton itself).
        downstream = {IN_GATEWAY: ["--index", str(args.dense), "--index", str(args.bm25)]}
        downstream[IN_GATEWAY] += ["--local-reranker", shlex.join(flags)] if flags else []
        remote_reranker = [] if reranker is None else ["--reranker", reranker]
        downstream |= {
            topology: ["--dense", dense, "--bm25", bm25, *remote_reranker]
            for topology, (dense, bm25) in addresses.items()
        }
        gateways = {
            topology: stack.start(
                f"gateway-{topology}", [python, "-m", "gateway", *options, *common], timeout=300.0
            ).address
            for topology, options in downstream.items()
        }
        result = asyncio.run(measure(args, gateways, texts, load_texts))
    record = {
        "bench": "serving",
        "git_sha": git_sha(),
        "device": f"cpu ({platform.machine()}), shared machine; gateway and retrievers are local processes",
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **result,
        # The gateway's own default variant (gateway/variants.yaml), which reranks: the overhead users feel.
        **(
            {"serving_overhead_p50_default": result["serving_overhead_p50"]}
            if args.variant == load_variants(None, VariantBounds()).default_name
            else {}
        ),
        # A reranked variant whose second stage Triton hosts: the same overhead with Triton's hop in it.
        **(
            {"serving_overhead_p50_triton": result["serving_overhead_p50"]}
            if args.reranker_backend == "triton"
            else {}
        ),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
