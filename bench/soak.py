"""Soak: steady load for a long time while random components are killed, recovered by the supervisor alone.

The stack is operations.fault_drill's, supervised (`ServiceStack.supervise`, tritonserver and redis-server
included): two dense shards, one BM25 shard, the reranker on a real tritonserver with a real redis-server
cache, and the gateway, each its own process. Arrivals are open-loop at `--load` x the sustainable rate
(complete answers per second from 4 closed-loop callers, measured first), 5 s deadlines, for `--minutes`.
Every `--kill-every` seconds one component, drawn by a seeded generator from the reranker, tritonserver,
redis-server and a dense shard, is killed with SIGKILL; nothing but the supervisor restarts it.

Recorded in `--out`.json and .md: requests by status code (the goal: none failed), degraded answers by
reason, latency percentiles, every kill with the restarts it took, and the resident memory of every process
at the start (after a warm-up) and at the end. A process killed during the soak is a young one at the end,
so its growth says little; the gateway is never killed.

Example:
    python bench/soak.py --minutes 30 --out bench/results/soak
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.provenance import git_sha
from operations.fault_drill import (
    DRILL_VARIANT,
    FAULTS,
    DrillStack,
    add_drill_arguments,
    drill_indexes,
    drill_queries,
)
from operations.loadgen import run_load, run_open_loop
from operations.processes import RestartPolicy
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 5.0


def _rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)


def resident_mib(pid: int | None) -> float | None:
    """Resident memory of a process, with its process group when it leads one (tritonserver's backend stubs
    are in its group); None when it is gone."""
    if pid is None or not Path(f"/proc/{pid}").exists():
        return None
    members = [pid]
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:  # a group leader: count its group
            members = []
            for entry in Path("/proc").iterdir():
                with contextlib.suppress(ValueError, ProcessLookupError):
                    if os.getpgid(int(entry.name)) == pid:
                        members.append(int(entry.name))
    return round(sum(_rss_kib(member) for member in members) / 1024, 1)


def redis_content(stack: DrillStack) -> dict[str, int]:
    """Redis's keys and the bytes its data takes: a score cache grows with what it holds (up to its
    maxmemory), which its resident memory alone cannot tell from a leak."""
    import redis

    assert stack.redis is not None
    client = redis.Redis.from_url(stack.redis.url)
    try:
        info = client.info("memory")
        return {"keys": int(client.dbsize()), "dataset_bytes": int(info["used_memory_dataset"])}
    finally:
        client.close()


def memory(stack: DrillStack) -> dict[str, float | None]:
    pids: dict[str, int | None] = {s.name: s.process.pid for s in stack.services.services}
    pids["triton"] = stack.triton.pid if stack.triton else None
    pids["redis"] = stack.redis.pid if stack.redis else None
    return {name: resident_mib(pid) for name, pid in sorted(pids.items())}


async def soak(stack: DrillStack, args: argparse.Namespace) -> dict[str, Any]:
    target = stack.gateway_address
    warm = await run_load(
        target, drill_queries(200, "warm"), total=200, concurrency=4, timeout=DEADLINE_SECONDS,
        variant=DRILL_VARIANT,
    )  # fmt: skip
    elapsed = max(r.finished for r in warm.records) - min(r.started for r in warm.records)
    sustainable = sum(r.ok and not r.degraded for r in warm.records) / elapsed
    rate = args.load * sustainable
    logger.info("sustainable %.1f/s; soaking at %.1f/s for %.0f min", sustainable, rate, args.minutes)
    memory_start, redis_start = memory(stack), redis_content(stack)
    rng = random.Random(args.seed)
    kills: list[dict[str, Any]] = []
    seconds = args.minutes * 60

    async def killer() -> None:
        started = time.monotonic()
        while (due := started + (len(kills) + 1) * args.kill_every) < started + seconds - 30:
            await asyncio.sleep(due - time.monotonic())
            fault = rng.choice(FAULTS)
            before = stack.restarts(fault)
            await asyncio.to_thread(stack.kill, fault)
            kills.append({"at_s": round(due - started, 1), "component": fault, "restarts_before": before})
            logger.info("killed %s at %.0f s", fault, due - started)

    killing = asyncio.create_task(killer())
    queries = drill_queries(int(rate * seconds) + 1, "soak")
    outcomes = await run_open_loop(
        target, queries, rate, seconds, timeout=DEADLINE_SECONDS, variant=DRILL_VARIANT
    )
    await killing
    await asyncio.sleep(5)  # let the last restart settle before the memory reading
    for kill in kills:
        kill["restarted"] = stack.restarts(kill["component"]) > kill.pop("restarts_before")
    memory_end, redis_end = memory(stack), redis_content(stack)
    latencies = np.asarray([o.seconds for o in outcomes]) * 1000
    answered = [o for o in outcomes if o.code == "OK"]
    growth = {}
    for name, start in memory_start.items():
        end = memory_end.get(name)
        if start and end:
            growth[name] = round(100 * (end - start) / start, 1)
    return {
        "sustainable_rate_per_s": round(sustainable, 2),
        "rate_per_s": round(rate, 2),
        "requests": len(outcomes),
        "codes": dict(Counter(o.code for o in outcomes)),
        "failed": sum(o.code != "OK" for o in outcomes),
        "degraded": sum(bool(o.reasons) for o in answered),
        "degraded_by_reason": dict(Counter(r for o in answered for r in set(o.reasons))),
        "latency_ms": {
            q: round(float(np.percentile(latencies, int(q[1:]))), 1) for q in ("p50", "p95", "p99")
        },
        "kills": kills,
        "memory_mib_start": memory_start,
        "memory_mib_end": memory_end,
        "memory_growth_percent": growth,
        "redis_start": redis_start,
        "redis_end": redis_end,
    }


def _markdown(report: dict[str, Any]) -> str:
    kills = ", ".join(
        k["component"] + ("" if k["restarted"] else " (NOT restarted)") for k in report["kills"]
    )
    lines = [
        "# Soak: steady load, a component killed every few minutes, recovered by the supervisor",
        "",
        f"{report['minutes']:g} minutes of open-loop arrivals at {report['rate_per_s']}/s "
        f"({report['load']}x the sustainable {report['sustainable_rate_per_s']}/s), 5 s deadlines; one "
        f"random component killed every {report['kill_every']:.0f} s (seed {report['seed']}), restarted "
        f"by the stack's supervisor only. Commit {report['commit'][:10]}, {report['host']}.",
        "",
        f"- requests {report['requests']}, failed **{report['failed']}**, codes {report['codes']}",
        f"- degraded {report['degraded']}: {report['degraded_by_reason']}",
        f"- latency ms {report['latency_ms']}",
        f"- kills: {kills}",
        "",
        "| process | RSS start MiB | RSS end MiB | growth % |",
        "|---|---:|---:|---:|",
    ]
    for name, start in report["memory_mib_start"].items():
        end = report["memory_mib_end"].get(name)
        lines.append(f"| {name} | {start} | {end} | {report['memory_growth_percent'].get(name, '-')} |")
    start, end = report["redis_start"], report["redis_end"]
    lines += [
        "",
        f"Redis is the score cache, bounded at maxmemory with LRU eviction: it held {start['keys']} keys "
        f"({start['dataset_bytes'] / 2**20:.1f} MiB of data) at the start and {end['keys']} "
        f"({end['dataset_bytes'] / 2**20:.1f} MiB) at the end (a restart empties it). Every soak "
        "query is new, so its growth is content. A process killed during the soak is a young one at the end; "
        "the gateway is never killed.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--load", type=float, default=0.5, help="x the sustainable rate")
    parser.add_argument("--kill-every", type=float, default=120.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=13)
    add_drill_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    configure_logging(args.log_level)
    dense, bm25 = drill_indexes(args.work, args.docs)
    run_dir = REPO / "var" / "run" / f"soak-{int(time.time())}"
    with DrillStack(
        run_dir, dense, bm25, args.artifact, supervised=True, restart_policy=RestartPolicy()
    ) as stack:
        measured = asyncio.run(soak(stack, args))
    report = {
        "commit": git_sha(cwd=REPO),
        "host": f"{platform.node()}, {os.cpu_count()} CPUs",
        "minutes": args.minutes,
        "load": args.load,
        "kill_every": args.kill_every,
        "seed": args.seed,
        **measured,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
