"""The cost of one retriever gRPC hop: a served BM25 shard against the same shard in-process.

Starts `retriever_service` on the SciFact BM25 index as a real process on loopback and loads the same shard
in this process (`retriever_service.bootstrap.load_index`). Each query goes through both, in an order that
alternates per query; the first `--warmup` queries are dropped. Done at k = 10 and k = 100, so the fixed
cost of a hop (the call, both event loops, the response envelope) separates from the per-candidate cost
(building, sending and parsing each candidate with its text). With `--idle-ms`, each timed call follows
that long an idle pause (both arms alike): on a VM whose idle vCPUs halt, a process that has been idle pays
for waking (and for caches the host's other work evicted), and a hop crosses more processes and threads
than an in-process call does. Writes JSON and a Markdown table.

Example:
    python bench/grpc_hop.py --bm25 var/indexes/scifact/bm25-dec31c8182f3d744-006f9ab9
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from gateway.clients import GrpcRetriever
from operations.processes import ServiceStack
from retriever_service.bootstrap import load_index
from search_common.logging_setup import configure_logging
from search_common.ports import Retriever


async def measure(args: argparse.Namespace, texts: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-hop-") as tmp, ServiceStack(Path(tmp)) as stack:
        argv = [
            sys.executable,
            "-m",
            "retriever_service",
            "--index",
            str(args.bm25 / "shard-0"),
            "--threads",
            "1",
        ]
        service = stack.spawn("bm25", argv)
        service.wait_ready(300.0)
        remote = GrpcRetriever("bm25", 0, service.address)
        (local,) = load_index(args.bm25)
        arms: dict[str, Retriever] = {"grpc": remote, "in_process": local}
        try:
            for k, idle_ms in itertools.product(args.k, args.idle_ms):
                ms: dict[str, list[float]] = {name: [] for name in arms}
                for i, text in enumerate(texts):
                    order = list(arms) if i % 2 else list(reversed(arms))
                    for name in order:
                        await asyncio.sleep(idle_ms / 1000.0)  # both processes idle meanwhile
                        start = time.perf_counter()
                        await arms[name].retrieve(text, k, timeout=args.timeout)
                        if i >= args.warmup:
                            ms[name].append(1000.0 * (time.perf_counter() - start))
                grpc_p50, local_p50 = statistics.median(ms["grpc"]), statistics.median(ms["in_process"])
                rows.append(
                    {
                        "k": k,
                        "idle_ms": idle_ms,
                        "queries": len(ms["grpc"]),
                        "grpc_p50_ms": round(grpc_p50, 3),
                        "in_process_p50_ms": round(local_p50, 3),
                        "hop_p50_ms": round(grpc_p50 - local_p50, 3),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            await remote.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/grpc_hop.json"))
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/data/scifact"))
    parser.add_argument("--bm25", type=Path, required=True, help="BM25 index version dir")
    parser.add_argument("--queries", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100])
    parser.add_argument(
        "--idle-ms", type=float, nargs="+", default=[0.0, 12.0, 50.0], help="pause before each timed call"
    )
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    configure_logging()
    texts = [q.text for q in BeirDataset(args.dataset).split_queries("test")[0][: args.queries]]
    rows = asyncio.run(measure(args, texts))
    record = {
        "bench": "grpc_hop",
        "git_sha": git_sha(),
        "device": "cpu (2 cores, shared); the retriever is a local process",
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "One retriever gRPC hop (a served BM25 shard) against the same shard in-process (SciFact test).",
        "",
        "| k | idle before each call, ms | queries | gRPC p50 ms | in-process p50 ms | hop p50 ms |",
        "|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['k']} | {r['idle_ms']:g} | {r['queries']} | {r['grpc_p50_ms']} | {r['in_process_p50_ms']} "
            f"| {r['hop_p50_ms']} |"
            for r in rows
        ),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
