"""Collects the bench records into bench/results/perf.json, a Markdown table beside it, and two plots.

Reads what the bench scripts wrote (each one measures its ratios within one run, baseline and candidate
interleaved): rerank.json (bench/rerank.py), serving.json (bench/serving.py), cache_batching.json
(bench/cache_batching.py), faiss_scaling.json (bench/faiss_scaling.py), late_interaction.json
(bench/late_interaction.py) and ab_scifact.json (`search-ab`).
A missing record leaves its keys null and is named in `missing`. Plots: FAISS recall@100 against QPS per
index type at each size (faiss_recall_qps.png) and the A/B variants' nDCG@10 against p50 latency
(ab_frontier.png), with the ColBERT variants of ab_scifact_colbert.json (`search-ab --reranker
late-interaction`), the poly-encoder's of ab_scifact_poly.json (`search-ab --reranker poly-encoder`) and the
re-scoring bi-encoder's of ab_scifact_mpnet.json (`search-ab --reranker bi-encoder`), each a run of its own,
beside them when they exist.

Example:
    python bench/perf_report.py --results bench/results
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.provenance import git_sha
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)

GOALS: dict[str, tuple[str, float]] = {
    "rerank_speedup_vs_st": (">=", 3.0),
    "rerank_ndcg_delta": ("abs <=", 0.005),
    "serving_overhead_p50": ("<=", 0.10),
    "cache_hit_speedup": (">=", 20.0),
    "faiss_1m_speedup_at_recall95": (">=", 100.0),
    "batching_speedup_16": (">=", 1.5),
    # The same bench with the model on a GPU (cache_batching.py --model-device cuda), where a run had one.
    "batching_speedup_16_gpu": (">=", 1.5),
    # ColBERT over stored document tokens against the cross-encoder, pairs/s on the same sets.
    "late_interaction_speedup_vs_ce": (">=", 10.0),
    # Triton at 16 clients over the engine it hosts, in process, on the same pairs (triton_overhead.py).
    "triton_vs_inprocess_16": (">=", 0.9),
    # The gateway's p50 over the pipeline's in process, both under open-loop load at half the sustainable QPS,
    # on the default variant (serving.py --reranker-backend on it).
    "serving_overhead_p50_loaded": ("<=", 0.10),
    # The same for the gateway's default variant, which reranks (serving.py --reranker-backend).
    "serving_overhead_p50_default": ("<=", 0.10),
    # The same for a variant whose cross-encoder Triton hosts (serving.py --reranker-backend triton).
    "serving_overhead_p50_triton": ("<=", 0.10),
}


def read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def meets(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, goal = GOALS[key]
    if op == ">=":
        return value >= goal
    if op == "<=":
        return value <= goal
    return abs(value) <= goal


def batching_table(title: str, batching: dict[str, Any]) -> list[str]:
    """Markdown lines: pairs/s with and without dynamic batching per client count (medians over rounds)."""
    lines = [
        f"Triton dynamic batching {title} (model ENGINE {batching.get('engine', 'onnx')}; medians of paired"
        " windows):",
        "",
        "| Triton clients | dynamic batching pairs/s | without pairs/s | ratio |",
        "|---:|---:|---:|---:|",
    ]
    windows: dict[tuple[bool, int], list[float]] = {}
    for r in batching["rows"]:
        windows.setdefault((r["dynamic_batching"], r["clients"]), []).append(r["pairs_per_s"])
    by = {key: round(statistics.median(values), 1) for key, values in windows.items()}
    for c in sorted({r["clients"] for r in batching["rows"]}):
        ratio = batching["speedup"].get(str(c))
        lines.append(f"| {c} | {by.get((True, c))} | {by.get((False, c))} | {ratio} |")
    return lines


def faiss_speedup(record: dict[str, Any], n: int) -> tuple[float | None, dict[str, Any] | None]:
    best = (record.get("best_at_recall95") or {}).get(str(n))
    if not best:
        return None, None
    return float(best["speedup_vs_flat"]), best


def plot_faiss(record: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(r["n"]) for r in record["rows"]})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        rows = [r for r in record["rows"] if r["n"] == n]
        for key in sorted({r["index_key"] for r in rows}):
            points = sorted(
                (r["recall@100"], r["qps"], r["search_params"]) for r in rows if r["index_key"] == key
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
            for recall, qps, params in points:
                if params:
                    ax.annotate(params.split("=")[1], (recall, qps), fontsize=7)
        ax.axvline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("recall@100 vs exact")
        ax.set_ylabel("QPS (batch, 2 threads)")
        ax.set_title(f"{n:,} vectors, 384-d")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_ab(record: dict[str, Any], out: Path, others: Sequence[dict[str, Any]] = ()) -> None:
    """The variants' nDCG@10 against p50 latency with the frontier; `others` are search-ab runs of their own
    (the ColBERT and poly-encoder variants, which need their own reranker), each drawn in its own colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(record, f"reranker {record.get('reranker_adapter', '')}")]
    runs += [(other, f"reranker {other.get('reranker_adapter', '')} (its own run)") for other in others]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = sorted((r["latency_p50_ms"], r["ndcg@10"], r["variant"]) for run, _ in runs for r in run["rows"])
    frontier: list[tuple[float, float]] = []
    for latency, ndcg, _ in points:
        if not frontier or ndcg > frontier[-1][1]:
            frontier.append((latency, ndcg))
    for run, label in runs:
        ax.scatter(
            [r["latency_p50_ms"] for r in run["rows"]], [r["ndcg@10"] for r in run["rows"]], label=label
        )
    for latency, ndcg, name in points:
        ax.annotate(name, (latency, ndcg), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.step([f[0] for f in frontier], [f[1] for f in frontier], where="post", color="C1", label="frontier")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("p50 latency, ms (in-process, one query in flight)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(f"A/B variants, {record.get('dataset', '')} {record.get('split', '')}")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


# bench/serving.py's topologies: the key suffix of each (the gateway searching the indexes itself carries
# the unsuffixed keys) and how to describe it.
TOPOLOGIES = {
    "": "the gateway searching the indexes itself",
    "_one_process": "one retriever process for every shard",
    "_per_shard": "one retriever process per shard",
}


def serving_lines(serving: dict[str, Any]) -> list[str]:
    """A bench/serving.py record in words: each topology's overhead, load, and where the time goes."""
    reranker = serving.get("params", {}).get("reranker_backend", "none")
    lines = [
        "",
        f"Serving ({serving['variant']}, reranker {reranker}, {serving['queries']} queries, one in flight; "
        f"in process p50/p95 {serving['in_process_p50_ms']}/{serving['in_process_p95_ms']} ms):",
        "",
        "| topology | gateway p50 ms | gateway p95 ms | serving_overhead_p50 |",
        "|---|---:|---:|---:|",
    ]
    for suffix, description in TOPOLOGIES.items():
        if not suffix and "gateway_p50_ms_one_process" not in serving:
            description = TOPOLOGIES["_one_process"]  # a record from before the in-gateway topology
        if f"gateway_p50_ms{suffix}" in serving:
            lines.append(
                f"| {description} | {serving[f'gateway_p50_ms{suffix}']} | "
                f"{serving[f'gateway_p95_ms{suffix}']} | {serving[f'serving_overhead_p50{suffix}']} |"
            )
    loaded = serving.get("loaded")
    if loaded:
        lines += [
            "",
            f"Under open-loop load at {loaded['rate_per_s']}/s (half the first topology's sustainable QPS), "
            f"same run: gateway p50/p95 {loaded['gateway_p50_ms']}/{loaded['gateway_p95_ms']} ms, in process "
            f"{loaded['in_process_p50_ms']}/{loaded['in_process_p95_ms']} ms; serving_overhead_p50_loaded "
            f"{loaded['serving_overhead_p50_loaded']}.",
        ]
    if "query_memo_speedup_p50" in serving:
        lines += [
            "",
            f"In-process query-embedding memo (same run): without it p50/p95 "
            f"{serving['in_process_no_memo_p50_ms']}/{serving['in_process_no_memo_p95_ms']} ms; speedup "
            f"p50 {serving['query_memo_speedup_p50']}x, p95 {serving['query_memo_speedup_p95']}x.",
        ]
    stages = serving.get("stages_p50_ms")
    if stages:
        arms = sorted({arm for by_arm in stages.values() for arm in by_arm})
        lines += [
            "",
            "Where the time goes (median per query; a shard's `retrieve` is its call as the pipeline waits"
            " for it, hop included; its `search` the shard's own work):",
            "",
            f"| stage | {' | '.join(f'{arm} ms' for arm in arms)} |",
            f"|---|{'---:|' * len(arms)}",
            *(
                f"| {name} | {' | '.join(fmt(by_arm.get(arm)) for arm in arms)} |"
                for name, by_arm in stages.items()
            ),
        ]
    for topology, load in (serving.get("load") or {}).items():
        lines += [
            "",
            f"Sustained load ({load['clients']} closed-loop clients, {load['seconds']} s, {topology}): "
            f"{load['qps']} QPS, p50 {load['p50_ms']} ms, p95 {load['p95_ms']} ms "
            f"(target {load['p95_target_ms']} ms: {'met' if load['p95_under_target'] else 'missed'}), "
            f"{load['errors']} errors.",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    configure_logging()
    res = args.results
    rerank = read(res / "rerank.json")
    # A longer reranker run (more queries scored) gives the nDCG delta when there is one.
    ndcg_runs = [r for r in (read(p) for p in sorted(res.glob("rerank_ndcg_*.json"))) if r]
    ndcg_source = max([rerank, *ndcg_runs] if rerank else ndcg_runs, key=lambda r: r["queries"], default=None)
    serving = read(res / "serving.json")
    serving_default = read(res / "serving_default.json")
    serving_triton = read(res / "serving_triton.json")
    cache_batching = read(res / "cache_batching.json")
    batching_gpu = (read(res / "cache_batching_gpu.json") or {}).get("batching") or {}
    faiss_rec = read(res / "faiss_scaling.json")
    # GPU figures exist only where a run had a GPU (bench/faiss_scaling.py --device gpu); not a goal key.
    faiss_gpu = read(res / "faiss_scaling_gpu.json")
    ab = read(res / "ab_scifact.json")
    # The stored-vector rerankers' variants, each measured by a search-ab run of its own.
    stored = ("colbert", "poly", "mpnet")
    ab_others = [run for name in stored if (run := read(res / f"ab_scifact_{name}.json"))]
    late_interaction = read(res / "late_interaction.json")
    triton_overhead = read(res / "triton_overhead.json")
    missing = [
        name
        for name, rec in (
            ("rerank.json", rerank),
            ("serving.json", serving),
            ("cache_batching.json", cache_batching),
            ("faiss_scaling.json", faiss_rec),
            ("late_interaction.json", late_interaction),
            ("ab_scifact.json", ab),
        )
        if rec is None
    ]
    cache = (cache_batching or {}).get("cache") or {}
    batching = (cache_batching or {}).get("batching") or {}
    f1m, best1m = faiss_speedup(faiss_rec, 1_000_000) if faiss_rec else (None, None)
    keys: dict[str, float | None] = {
        "rerank_speedup_vs_st": (rerank or {}).get("rerank_speedup_vs_st"),
        "rerank_ndcg_delta": (ndcg_source or {}).get("rerank_ndcg_delta"),
        "serving_overhead_p50": (serving or {}).get("serving_overhead_p50"),
        "cache_hit_speedup": cache.get("cache_hit_speedup"),
        "faiss_1m_speedup_at_recall95": f1m,
        "batching_speedup_16": (batching.get("speedup") or {}).get("16"),
        "batching_speedup_16_gpu": (batching_gpu.get("speedup") or {}).get("16"),
        "late_interaction_speedup_vs_ce": (late_interaction or {}).get("late_interaction_speedup_vs_ce"),
        "triton_vs_inprocess_16": (triton_overhead or {}).get("triton_vs_inprocess_16"),
        "serving_overhead_p50_loaded": (serving_default or {}).get("serving_overhead_p50_loaded"),
        "serving_overhead_p50_default": (serving_default or {}).get("serving_overhead_p50_default"),
        "serving_overhead_p50_triton": (serving_triton or {}).get("serving_overhead_p50_triton"),
    }
    perf: dict[str, Any] = {
        **keys,
        "goals": {k: f"{op} {goal}" for k, (op, goal) in GOALS.items()},
        # Which CPU the reranker ratio ran on: bf16 is the fast path only with AMX, int8 needs VNNI.
        "rerank_speedup_vs_st_cpu": None
        if rerank is None
        else {k: rerank.get(k) for k in ("cpu", "cpu_flags", "in_process_scorer", "pass_shape")},
        "meets_goal": {k: meets(k, v) for k, v in keys.items()},
        "details": {
            "rerank": rerank,
            "rerank_ndcg_source": None
            if ndcg_source is None
            else {
                k: ndcg_source.get(k)
                for k in ("queries", "scorers", "rerank_ndcg_delta", "git_sha", "params")
            },
            "serving": serving,
            "serving_default": None
            if serving_default is None
            else {k: v for k, v in serving_default.items() if k not in ("stages_p50_ms", "load")},
            "serving_triton": None
            if serving_triton is None
            else {k: v for k, v in serving_triton.items() if k not in ("stages_p50_ms", "load")},
            "late_interaction": late_interaction,
            "triton_overhead": triton_overhead,
            "cache": cache or None,
            "batching": batching or None,
            "batching_gpu": batching_gpu or None,
            "faiss_best_at_recall95": (faiss_rec or {}).get("best_at_recall95"),
            "faiss_1m_best": best1m,
            "faiss_gpu": None
            if faiss_gpu is None
            else {k: faiss_gpu.get(k) for k in ("device", "best_at_recall95", "git_sha")},
        },
        "missing": missing,
        "git_sha": git_sha(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (res / "perf.json").write_text(json.dumps(perf, indent=2) + "\n")

    lines = [
        "# Performance",
        "",
        f"Generated by `python bench/perf_report.py` at {perf['written']} (commit {perf['git_sha'][:7]})"
        " from the records beside it. Every figure is a ratio measured within one run on a shared, loaded"
        " 2-core CPU, except the GPU ones, from a lent machine with one NVIDIA H200 and 16 cores.",
        "",
        "| key | value | goal | met |",
        "|---|---:|---|---|",
    ]
    for key, value in keys.items():
        op, goal = GOALS[key]
        met = perf["meets_goal"][key]
        lines.append(
            f"| {key} | {fmt(value)} | {op} {goal} | {'—' if met is None else ('yes' if met else 'no')} |"
        )
    if rerank:
        lines += [
            "",
            f"Reranker, {rerank['queries']} SciFact test queries x {rerank['pairs_per_set']} pairs "
            f"(artifact quantization: {rerank.get('artifact_quantization')}; fp32 reference: "
            f"{rerank.get('fp32_reference')}; the goal keys are "
            f"`{rerank.get('in_process_scorer', 'onnx')}`'s, the engine the reranker's default "
            f"`--backend auto` picks on this CPU: {rerank.get('cpu', 'not recorded')}, flags "
            f"{', '.join(rerank.get('cpu_flags') or ['not recorded'])}; passes: "
            f"{rerank.get('pass_shape', 'padded batches')}):",
            "",
            "| scorer | pairs/s | p50 ms / 100 pairs | p95 ms | nDCG@10 | max abs score diff vs fp32 torch |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in rerank["scorers"].items():
            diff = rerank.get("max_abs_score_diff_vs_torch_fp32", {}).get(name)
            lines.append(
                f"| {name} | {row['pairs_per_s']} | {row['p50_ms']} | {row['p95_ms']} | {row['ndcg@10']} "
                f"| {fmt(diff)} |"
            )
    for record in (serving, serving_default, serving_triton):
        if record:
            lines += serving_lines(record)
    if late_interaction:
        lines += [
            "",
            f"Late interaction against the cross-encoder ({late_interaction['queries']} SciFact test "
            f"queries x {late_interaction['depth']} pairs, flags {', '.join(late_interaction['cpu_flags'])}; "
            "[late_interaction.md](late_interaction.md)):",
            "",
            "| scorer | pairs/s | p50 ms per set | nDCG@10 |",
            "|---|---:|---:|---:|",
            *(
                f"| {name} | {row['pairs_per_s']} | {row['p50_ms']} | {row['ndcg@10']} |"
                for name, row in late_interaction["scorers"].items()
            ),
        ]
    if cache:
        lines += [
            "",
            f"Cache ({cache['backend']}, {cache['documents_per_request']} documents): miss p50/p95 "
            f"{cache['miss_p50_ms']}/{cache['miss_p95_ms']} ms, "
            f"hit {cache['hit_p50_ms']}/{cache['hit_p95_ms']} ms.",
        ]
    for title, record in (("on this CPU", batching), ("with the model on a GPU", batching_gpu)):
        if record:
            lines += ["", *batching_table(title, record)]
    if faiss_rec:
        lines += [
            "",
            "| n | index | search params | build s | QPS | recall@100 | x Flat |",
            "|---:|---|---|---:|---:|---:|---:|",
        ]
        for r in faiss_rec["rows"]:
            lines.append(
                f"| {r['n']:,} | {r['index_key']} | {r['search_params'] or '—'} | {r['build_s']} "
                f"| {r['qps']} | {r['recall@100']} | {r['speedup_vs_flat']} |"
            )
    if faiss_gpu:
        lines += ["", f"FAISS on a GPU ({faiss_gpu['device']}): faiss_scaling_gpu.md has every row."]
    if missing:
        lines += ["", f"Missing records: {', '.join(missing)}."]
    (res / "perf.md").write_text("\n".join(lines) + "\n")
    if not args.no_plots:
        if faiss_rec:
            plot_faiss(faiss_rec, res / "faiss_recall_qps.png")
        if ab:
            plot_ab(ab, res / "ab_frontier.png", ab_others)
    print(json.dumps(keys, indent=1))


if __name__ == "__main__":
    main()
