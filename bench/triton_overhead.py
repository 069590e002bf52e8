"""Triton against the engine it hosts: the same pairs through a real tritonserver at 16 clients and through
the in-process engine, in one run.

`--queries` SciFact test queries each bring their first `--depth` hybrid candidates (the cached first stage
of training.cross_encoder.mine): one rerank request each. Per round, in an order that alternates:

- `in_process`: the artifact's engine as Triton's model loads it (`CrossEncoderRuntime`, the config's ENGINE,
  intra-op threads and score batch size) scores every request back to back: the engine's own throughput.
- `triton`: `--clients` concurrent callers send the same requests through `TritonScorer` to a tritonserver
  serving the artifact with the committed config (dynamic batching, one instance).

triton_vs_inprocess_16 = Triton's pairs/s / the engine's pairs/s, the median over rounds (goal >= 0.9).
Where Triton spends the rest comes from its own per-model counters, read before and after the Triton arms:
time queued, moving inputs into the python backend's stub (compute_input), the model's execute
(compute_infer: decoding the string tensors, tokenising, scoring) and outputs back (compute_output), per
request, beside the client's own latency per request (the difference is gRPC and serialisation). Triton
credits every request of a dynamic batch with the whole execution, so the model's time per pair is the
per-request compute_infer over the pairs per execution, set beside the engine's own time per pair.

Example:
    python bench/triton_overhead.py \
        --artifact var/models/cross-encoder-candidates/ce-lw-mean-pq300-len256-e1/v20261206T201052Z
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from model_runtimes.hardware import cpu_flags, cpu_model
from search_common.logging_setup import configure_logging
from training.cross_encoder.mine import (
    DEFAULT_CACHE,
    DEFAULT_INDEXES,
    first_stage_candidates,
    labelled_queries,
)

logger = logging.getLogger(__name__)
MODEL = "cross_encoder"
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)
# The config's score batch size (triton_models/cross_encoder/config.pbtxt SCORE_BATCH_SIZE default).
SCORE_BATCH_SIZE = 16

Request = tuple[str, list[str]]


def triton_counters(metrics_url: str) -> dict[str, float]:
    """The model's cumulative counters from Triton's metrics endpoint (`name{model=...} value` lines)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    values = dict.fromkeys(COUNTERS, 0.0)
    for line in lines:
        name, _, rest = line.partition("{")
        if name in values and f'model="{MODEL}"' in rest:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values


async def through_triton(url: str, requests: list[Request], clients: int) -> tuple[float, list[float]]:
    """Seconds for every request sent by `clients` concurrent callers, and each request's latency."""
    from reranker_service.backends.triton import TritonScorer

    scorer = TritonScorer(url, timeout_seconds=120.0, max_pending=clients * 4)
    await scorer.start()
    pending = list(reversed(requests))
    latencies: list[float] = []

    async def caller() -> None:
        while pending:
            query, texts = pending.pop()
            started = time.perf_counter()
            await scorer.score(query, texts)
            latencies.append(time.perf_counter() - started)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(clients)))
        return time.perf_counter() - started, latencies
    finally:
        await scorer.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifact", type=Path, required=True, help="cross-encoder artifact version dir")
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/data/scifact"))
    parser.add_argument("--queries", type=int, default=48)
    parser.add_argument("--depth", type=int, default=20, help="pairs per request (the rerank depth)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--engine", choices=["auto", "onnx", "torch"], default="auto", help="the config's ENGINE"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/triton_overhead"))
    args = parser.parse_args()
    if min(args.queries, args.depth, args.clients, args.rounds) < 1:
        parser.error("--queries, --depth, --clients and --rounds must be positive")
    configure_logging()

    from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
    from operations.triton_repository import assemble_model_repository
    from operations.tritonserver import TritonServer

    data_set = BeirDataset(args.dataset)
    documents = {d.doc_id: d for d in data_set.corpus()}
    queries = {q.query_id: q.text for q in data_set.queries().values()}
    candidates = first_stage_candidates(
        data_set.corpus_path,
        labelled_queries(args.dataset),
        cache_dir=DEFAULT_CACHE,
        index_root=DEFAULT_INDEXES / data_set.name,
    )
    ids = [q for q in sorted(data_set.qrels("test")) if q in candidates][: args.queries]
    requests = [(queries[q], [documents[d].model_text() for d in candidates[q][: args.depth]]) for q in ids]
    pairs = sum(len(texts) for _, texts in requests)

    engine = CrossEncoderRuntime.load(args.artifact, engine=args.engine)  # as the model's instance loads it
    for query, texts in requests[:2]:
        engine.score(query, texts, batch_size=SCORE_BATCH_SIZE)  # warm-up
    in_process: list[float] = []
    triton: list[float] = []
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-triton-overhead-") as tmp:
        repository = assemble_model_repository(
            Path(tmp) / "models",
            artifact_root=args.artifact.parent,
            artifact_version=args.artifact.name,
            engine=args.engine,
        )
        with TritonServer(repository, startup_timeout=300.0) as server:
            url, metrics_url = server.grpc_url, f"http://127.0.0.1:{server.metrics_port}/metrics"
            asyncio.run(through_triton(url, requests[:4], args.clients))  # warm-up
            before = triton_counters(metrics_url)
            for round_ in range(args.rounds):
                arms = ["in_process", "triton"] if round_ % 2 == 0 else ["triton", "in_process"]
                for arm in arms:
                    if arm == "in_process":
                        started = time.perf_counter()
                        for query, texts in requests:
                            engine.score(query, texts, batch_size=SCORE_BATCH_SIZE)
                        in_process.append(time.perf_counter() - started)
                    else:
                        seconds, answered = asyncio.run(through_triton(url, requests, args.clients))
                        triton.append(seconds)
                        latencies += answered
                logger.info(
                    "round %d: in process %.1f s, triton %.1f s", round_ + 1, in_process[-1], triton[-1]
                )
            after = triton_counters(metrics_url)
    spent = {name: after[name] - before[name] for name in COUNTERS}
    sent = spent["nv_inference_request_success"] or 1.0
    scored = spent["nv_inference_count"] or 1.0
    ratios = [i / t for i, t in zip(in_process, triton, strict=True)]  # (pairs/t) / (pairs/i)

    def per_request_ms(stage: str) -> float:
        return round(spent[f"nv_inference_{stage}_duration_us"] / sent / 1000.0, 3)

    pairs_per_execution = scored / (spent["nv_inference_exec_count"] or 1.0)
    record: dict[str, Any] = {
        "bench": "triton_overhead",
        "git_sha": git_sha(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "engine": engine.description,
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "pairs_per_round": pairs,
        "in_process_pairs_per_s": round(pairs / statistics.median(in_process), 1),
        "triton_pairs_per_s": round(pairs / statistics.median(triton), 1),
        f"triton_vs_inprocess_{args.clients}": round(statistics.median(ratios), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "triton": {
            "client_latency_ms_p50": round(statistics.median(latencies) * 1000.0, 1),
            "pairs_per_execution": round(pairs_per_execution, 1),
            "per_request_ms": {
                stage: per_request_ms(stage)
                for stage in ("request", "queue", "compute_input", "compute_infer", "compute_output")
            },
            "model_ms_per_pair": round(per_request_ms("compute_infer") / pairs_per_execution, 3),
        },
        "in_process_ms_per_pair": round(statistics.median(in_process) / pairs * 1000.0, 3),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record, args.clients))
    print(markdown(record, args.clients))


def markdown(record: dict[str, Any], clients: int) -> str:
    triton, stages = record["triton"], record["triton"]["per_request_ms"]
    params, flags = record["params"], ", ".join(record["cpu_flags"])
    return (
        "\n".join(
            [
                "# Triton against the engine it hosts",
                "",
                f"{params['queries']} SciFact test queries x {params['depth']} pairs, {params['rounds']} "
                f"rounds; engine {record['engine']}; {record['cpu']} ({flags}); "
                f"commit {record['git_sha'][:10]}.",
                "",
                "| | pairs/s | ms per pair |",
                "|---|---:|---:|",
                f"| in-process engine, requests back to back | {record['in_process_pairs_per_s']} "
                f"| {record['in_process_ms_per_pair']} |",
                f"| tritonserver, {clients} clients | {record['triton_pairs_per_s']} "
                f"| {triton['model_ms_per_pair']} (the model's execute) |",
                "",
                f"**triton_vs_inprocess_{clients} = {record[f'triton_vs_inprocess_{clients}']}** "
                f"(per round {record['ratio_per_round']}).",
                "",
                f"Inside Triton, per request: queued {stages['queue']} ms, inputs to the python stub "
                f"{stages['compute_input']} ms, execute {stages['compute_infer']} ms (a dynamic batch of "
                f"{triton['pairs_per_execution']} pairs), outputs back {stages['compute_output']} ms; "
                f"{stages['request']} ms in all, against {triton['client_latency_ms_p50']} ms p50 at the "
                "client.",
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
