"""Faults under load: kill -9 each component mid-run, restart it, and count what the callers saw.

Builds (once, cached under var/bench/faults/) a 2-shard dense index and a BM25 index over the first
`--docs` documents of the stdlib corpus, starts operations.fault_drill's stack (retriever shards, reranker
on a real tritonserver with a real redis-server cache, gateway; every one its own process on loopback) and,
for each fault in turn (reranker, triton, redis, one dense shard), sends `--requests` Search requests from
`--concurrency` concurrent grpc.aio clients, kills the component a quarter of the way in, restarts it on
the same port after `--down` seconds and keeps the load on until the answers have settled. The gateway is
never restarted. Writes one JSON list (fault, requests, failed, degraded, recovery_s, plus status codes and
timings) and a Markdown table.

With `--supervised` the drill restarts nothing: the stack's supervisor (`ServiceStack.supervise`, with
tritonserver and redis-server as external components) sees each crash and brings the component back, and
each row adds `time_to_recovery_s`, from the kill until answers stopped being degraded.

Example:
    python bench/loadgen.py --requests 2000 --out bench/results/faults
    python bench/loadgen.py --requests 1000 --supervised --out bench/results/faults_supervised
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import time
from pathlib import Path

from evaluation.provenance import git_sha
from operations.fault_drill import (
    FAULTS,
    DrillStack,
    FaultReport,
    add_drill_arguments,
    drill_indexes,
    run_fault,
)
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def _markdown(rows: list[FaultReport], args: argparse.Namespace, sha: str) -> str:
    restart = (
        "the stack's supervisor restarts it on the same port (first retry after 1 s), the drill restarts "
        "nothing"
        if args.supervised
        else f"restart on the same port after {args.down:.0f} s"
    )
    lines = [
        "# Faults under load" + (", recovered by the supervisor" if args.supervised else ""),
        "",
        f"{args.concurrency} concurrent grpc.aio clients, about {args.requests} Search requests per fault "
        "(hybrid first stage, cross-encoder over Triton at rerank depth 10), kill -9 a quarter of the way "
        f"in, {restart}; the gateway is never restarted. "
        f"Commit {sha[:10]}, {platform.node()}, 2 shared CPU cores.",
        "",
        "| fault | requests | failed | degraded | recovery_s | down_s | restart_s | time_to_recovery_s "
        "| codes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        codes = ", ".join(f"{k} {v}" for k, v in sorted(r.codes.items()))
        lines.append(
            f"| {r.fault} | {r.requests} | {r.failed} | {r.degraded} | {r.recovery_s} | {r.down_s} | "
            f"{r.restart_s} | {r.time_to_recovery_s if r.time_to_recovery_s is not None else '-'} | {codes} |"
        )
    lines += [
        "",
        "recovery_s: seconds from the restart until the last failed or degraded answer; 0 when none came "
        "after the restart. down_s: from the kill to the restart; restart_s: the restart itself until ready "
        "(supervised: down_s is nil and restart_s runs from the kill until the supervisor had started it). "
        "time_to_recovery_s (supervised): from the kill until the last failed or degraded answer. During a "
        "Redis outage the reranker skips the cache and the answers stay complete, flagged degraded by the "
        "score cache (DEGRADATION_REASON_CACHE_BYPASSED).",
    ]
    return "\n".join(lines) + "\n"


async def _drills(args: argparse.Namespace, dense: Path, bm25: Path) -> list[FaultReport]:
    rows: list[FaultReport] = []
    run_dir = REPO / "var" / "run" / f"faults-{int(time.time())}"
    with DrillStack(run_dir, dense, bm25, args.artifact, supervised=args.supervised) as stack:
        for fault in args.faults:
            report = await run_fault(
                stack,
                fault,
                requests=args.requests,
                concurrency=args.concurrency,
                down_seconds=args.down,
                settle_seconds=args.settle,
            )
            print(json.dumps(report.row()))
            rows.append(report)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    general = parser.add_argument_group("general")
    general.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "faults")
    general.add_argument("--log-level", default="WARNING")
    add_drill_arguments(parser)
    load = parser.add_argument_group("load and faults")
    load.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    load.add_argument("--requests", type=int, default=2000)
    load.add_argument("--concurrency", type=int, default=16)
    load.add_argument("--down", type=float, default=3.0, help="seconds a component stays dead")
    load.add_argument("--settle", type=float, default=3.0, help="clean seconds that end a drill")
    load.add_argument(
        "--supervised",
        action="store_true",
        help="let the stack's supervisor restart each killed component (--down is then unused)",
    )
    args = parser.parse_args()
    configure_logging(args.log_level)
    dense, bm25 = drill_indexes(args.work, args.docs)
    sha = git_sha(cwd=REPO)
    rows = asyncio.run(_drills(args, dense, bm25))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps([r.row() for r in rows], indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(rows, args, sha))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
