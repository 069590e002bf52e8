"""Overload: a burst of simultaneous requests, then a sustained 4x overload, against the real stack.

The stack is operations.fault_drill's (two dense shards, one BM25 shard, the reranker on a real tritonserver
with a real redis-server cache, the gateway; every one its own process on loopback), run twice in one
invocation: first with the gateway as it was (`--deadline-margin-cap` equal to the fixed 20 ms margin and
`--no-shed-reranks`: the baseline), then with its defaults (a margin learned from the event loop's lag, and
reranks shed when they would not answer in time). Each stack gets:

1. **burst**: `--burst` requests at once, each on its own channel (separate callers), 5 s deadlines;
2. **overload**: open-loop arrivals at `--factor` x the sustainable rate for `--seconds`, 5 s deadlines. The
   sustainable rate is measured once, on the baseline stack: complete (not degraded) answers per second from
   4 closed-loop callers.

Every request's status code, latency and degradation reasons are kept; the first stage's own latency is the
gateway's `fanout` stage timing of each answered request. Writes `--out`.json and .md.

Example:
    python bench/overload.py --out bench/results/overload
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from search.v1 import search_service_pb2_grpc

from evaluation.provenance import git_sha
from operations.fault_drill import (
    DRILL_VARIANT,
    DrillStack,
    add_drill_arguments,
    drill_indexes,
    drill_queries,
)
from operations.loadgen import Answer, ask, run_load, run_open_loop
from search_common.grpc_server import message_size_options
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 5.0
# The gateway as it was before the learned margin and shedding: a fixed 20 ms margin, every rerank sent.
BASELINE_ARGS = ("--deadline-margin", "0.02", "--deadline-margin-cap", "0.02", "--no-shed-reranks")


async def burst(target: str, queries: Sequence[str]) -> list[Answer]:
    """Every query at once, each from its own channel."""
    channels = [grpc.aio.insecure_channel(target, options=message_size_options()) for _ in queries]
    try:
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        stubs = [search_service_pb2_grpc.SearchServiceStub(channel) for channel in channels]
        asked = (
            ask(stub, q, timeout=DEADLINE_SECONDS, variant=DRILL_VARIANT)
            for stub, q in zip(stubs, queries, strict=True)
        )
        return list(await asyncio.gather(*asked))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


async def sustainable_rate(target: str, queries: Sequence[str], requests: int = 200) -> float:
    """Complete answers per second from 4 closed-loop callers."""
    started = time.monotonic()
    result = await run_load(
        target, queries, total=requests, concurrency=4, timeout=DEADLINE_SECONDS, variant=DRILL_VARIANT
    )
    complete = sum(r.ok and not r.degraded for r in result.records)
    return complete / (time.monotonic() - started)


def summary(outcomes: Sequence[Answer]) -> dict[str, Any]:
    answered = [o for o in outcomes if o.code == "OK"]
    latencies = np.asarray([o.seconds for o in outcomes]) * 1000
    first = np.asarray([o.first_stage_seconds for o in answered if o.first_stage_seconds is not None]) * 1000

    def pct(values: np.ndarray[Any, Any], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values.size else None

    return {
        "requests": len(outcomes),
        "codes": dict(Counter(o.code for o in outcomes)),
        "deadline_exceeded": sum(o.code == "DEADLINE_EXCEEDED" for o in outcomes),
        "late_answers": sum(o.code == "OK" and o.seconds > DEADLINE_SECONDS for o in outcomes),
        "degraded": sum(bool(o.reasons) for o in answered),
        "degraded_by_reason": dict(Counter(r for o in answered for r in set(o.reasons))),
        "latency_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95), "p99": pct(latencies, 99)},
        "first_stage_ms": {"p50": pct(first, 50), "p95": pct(first, 95), "p99": pct(first, 99)},
    }


async def _phases(
    stack: DrillStack, args: argparse.Namespace, rate: float | None, tag: str
) -> tuple[dict[str, Any], float]:
    target = stack.gateway_address
    if rate is None:
        rate = await sustainable_rate(target, drill_queries(200, f"rate-{tag}"))
        logger.info("sustainable rate %.1f complete answers/s", rate)
    bursted = summary(await burst(target, drill_queries(args.burst, f"burst-{tag}")))
    logger.info("%s burst: %s", tag, bursted)
    overload_rate = args.factor * rate
    queries = drill_queries(int(overload_rate * args.seconds) + 1, f"load-{tag}")
    arrivals = run_open_loop(
        target, queries, overload_rate, args.seconds, timeout=DEADLINE_SECONDS, variant=DRILL_VARIANT
    )
    loaded = summary(await arrivals)
    logger.info("%s overload: %s", tag, loaded)
    return {"burst": bursted, "overload": {"rate_per_s": round(overload_rate, 2), **loaded}}, rate


async def run(args: argparse.Namespace, dense: Path, bm25: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    rate: float | None = None
    for tag, gateway_args in (("baseline", BASELINE_ARGS), ("learned", ())):
        run_dir = REPO / "var" / "run" / f"overload-{tag}-{int(time.time())}"
        with DrillStack(run_dir, dense, bm25, args.artifact, gateway_args=gateway_args) as stack:
            runs[tag], rate = await _phases(stack, args, rate, tag)
            runs[tag]["gateway_args"] = list(gateway_args)
    assert rate is not None
    return {"sustainable_rate_per_s": round(rate, 2), **runs}


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Overload: a burst and a sustained 4x load, degrading before the deadline",
        "",
        f"{report['burst_requests']} simultaneous requests, then {report['factor']}x the sustainable rate "
        f"({report['sustainable_rate_per_s']} complete answers/s) for {report['seconds']:.0f} s, "
        "5 s deadlines, against the drill stack (hybrid first stage, cross-encoder over Triton at depth 10, "
        "Redis cache). "
        f"Baseline: the gateway with a fixed 20 ms margin and no shedding. Commit {report['commit'][:10]}, "
        f"{report['host']}.",
        "",
        "| phase | gateway | requests | DEADLINE_EXCEEDED | degraded (by reason) | p50 ms | p95 ms | p99 ms "
        "| first stage p95 ms |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for phase in ("burst", "overload"):
        for tag in ("baseline", "learned"):
            r = report[tag][phase]
            reasons = ", ".join(f"{k.removeprefix('DEGRADATION_REASON_').lower()} {v}"
                                for k, v in sorted(r["degraded_by_reason"].items()))  # fmt: skip
            lines.append(
                f"| {phase} | {tag} | {r['requests']} | {r['deadline_exceeded']} | {r['degraded']} "
                f"({reasons or 'none'}) | {r['latency_ms']['p50']} | {r['latency_ms']['p95']} | "
                f"{r['latency_ms']['p99']} | {r['first_stage_ms']['p95']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "overload")
    parser.add_argument("--burst", type=int, default=200, help="simultaneous requests")
    parser.add_argument("--factor", type=float, default=4.0, help="x the sustainable rate")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the overload")
    add_drill_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    configure_logging(args.log_level)
    dense, bm25 = drill_indexes(args.work, args.docs)
    report = {
        "commit": git_sha(cwd=REPO),
        "host": f"{platform.node()}, {os.cpu_count()} CPUs",
        "burst_requests": args.burst,
        "factor": args.factor,
        "seconds": args.seconds,
        "deadline_seconds": DEADLINE_SECONDS,
        **asyncio.run(run(args, dense, bm25)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
