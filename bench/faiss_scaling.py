"""FAISS scaling: Flat against IVF against HNSW on clustered synthetic normalised vectors.

For each database size builds every index (timed), measures batch-search QPS with a fixed thread count
(repeats interleaved between index types, warmup dropped, median kept) and recall@k against exact search
(Flat's own results are the ground truth). Writes one JSON record per run; each size's rows are appended
as soon as they are measured, so a long 1M run leaves partial results if it is stopped.

`--device gpu` (a machine with faiss-gpu) adds Flat and IVF built and searched on GPU 0, through the same
`place_index` the retriever serves with, next to the CPU indexes of the same run; every speedup is still
against the CPU Flat. `--single-queries N` also times N one-query searches per setting (p50 and p95 ms):
what one online request sees, where a batch of queries would hide the GPU's per-call cost.

Examples:
    python bench/faiss_scaling.py --sizes 10000 100000 1000000 --out bench/results/faiss_scaling.json
    python bench/faiss_scaling.py --device gpu --threads 16 --sizes 100000 1000000 --single-queries 200 \
        --out bench/results/faiss_scaling_gpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from evaluation.provenance import git_sha
from retriever_service.config import FaissDevice
from retriever_service.faiss_index import apply_search_params, place_index

logger = logging.getLogger(__name__)


def clustered_vectors(
    n: int,
    dim: int,
    centers: npt.NDArray[np.float32],
    mixing: npt.NDArray[np.float32],
    sigma: float,
    seed: int,
) -> npt.NDArray[np.float32]:
    """n points of a seeded Gaussian mixture, L2-normalised (generated in chunks).

    Each point is a cluster centre plus Gaussian noise in a low-dimensional latent space mapped to `dim`
    by the shared `mixing` matrix (latent_dim x dim), plus a little isotropic noise: sentence embeddings
    have a low intrinsic dimension, and purely isotropic 384-d noise would make every neighbour nearly
    equidistant, which no real corpus looks like.
    """
    rng = np.random.default_rng(seed)
    latent = mixing.shape[0]
    out = np.empty((n, dim), dtype=np.float32)
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        which = rng.integers(0, len(centers), size=m)
        block = centers[which] + sigma * (rng.standard_normal((m, latent), dtype=np.float32) @ mixing)
        block += 0.1 * sigma * rng.standard_normal((m, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


def recall_at_k(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64], k: int) -> float:
    """Mean fraction of the true top-k ids found in the returned top-k (ids only; ties count by id)."""
    assert found.shape == truth.shape and found.shape[1] >= k
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def timed_search(
    index: faiss.Index, queries: npt.NDArray[np.float32], k: int
) -> tuple[float, npt.NDArray[np.int64]]:
    start = time.perf_counter()
    _, ids = index.search(queries, k)
    return time.perf_counter() - start, ids


def single_query_ms(index: faiss.Index, queries: npt.NDArray[np.float32], k: int) -> tuple[float, float]:
    """p50 and p95 wall milliseconds of one-query searches (the first one dropped as warmup)."""
    times = []
    for row in queries:
        start = time.perf_counter()
        index.search(row[None, :], k)
        times.append(1000.0 * (time.perf_counter() - start))
    times = sorted(times[1:])
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def ivf_lists(n: int) -> int:
    return max(16, min(4096, int(4 * n**0.5)))


def run_size(
    n: int,
    args: argparse.Namespace,
    centers: npt.NDArray[np.float32],
    mixing: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
) -> list[dict[str, Any]]:
    dim, k = args.dim, args.k
    logger.info("generating %d vectors", n)
    base = clustered_vectors(n, dim, centers, mixing, args.sigma, args.seed + n)
    rows: list[dict[str, Any]] = []
    built: dict[str, tuple[faiss.Index, float]] = {}
    nlist = ivf_lists(n)
    ivf = f"IVF{nlist},Flat"
    nprobes = [f"nprobe={p}" for p in args.nprobe if p <= nlist]
    # (row key, factory, device, search settings); the CPU Flat is the ground truth and the speedup baseline.
    specs: list[tuple[str, str, FaissDevice, list[str]]] = [("Flat", "Flat", "cpu", [""])]
    if args.cpu_ann:
        specs += [
            (ivf, ivf, "cpu", nprobes),
            ("HNSW32,Flat", "HNSW32,Flat", "cpu", [f"efSearch={e}" for e in args.ef_search]),
        ]
    if args.device == "gpu":
        specs += [("Flat@gpu", "Flat", "gpu", [""]), (f"{ivf}@gpu", ivf, "gpu", nprobes)]
    for key, factory, device, _ in specs:
        logger.info("n=%d building %s", n, key)
        start = time.perf_counter()
        index = place_index(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT), device, what=key)
        if not index.is_trained:
            train_n = min(n, max(nlist * 40, 50_000))
            sample = base[np.random.default_rng(args.seed).choice(n, size=train_n, replace=False)]
            index.train(sample)
        index.add(base)
        built[key] = (index, time.perf_counter() - start)
        logger.info("n=%d built %s in %.1fs", n, key, built[key][1])
    flat = built["Flat"][0]
    _, truth = flat.search(queries, k)
    settings = [(key, p) for key, _, _, params in specs for p in params]
    times: dict[tuple[str, str], list[float]] = {s: [] for s in settings}
    found: dict[tuple[str, str], npt.NDArray[np.int64]] = {}
    single: dict[tuple[str, str], tuple[float, float]] = {}
    for rep in range(args.repeats + 1):  # rep 0 is warmup, dropped
        for key, p in settings:
            index = built[key][0]
            apply_search_params(index, p)
            elapsed, ids = timed_search(index, queries, k)
            if rep > 0:
                times[(key, p)].append(elapsed)
            found[(key, p)] = ids
            if rep == args.repeats and args.single_queries:
                single[(key, p)] = single_query_ms(index, queries[: args.single_queries + 1], k)
    flat_qps = len(queries) / statistics.median(times[("Flat", "")])
    devices = {key: device for key, _, device, _ in specs}
    for key, p in settings:
        qps = len(queries) / statistics.median(times[(key, p)])
        row: dict[str, Any] = {
            "n": n,
            "index_key": key,
            "device": devices[key],
            "search_params": p,
            "build_s": round(built[key][1], 3),
            "qps": round(qps, 1),
            "ms_per_query": round(1000.0 / qps, 4),
            f"recall@{k}": round(recall_at_k(found[(key, p)], truth, k), 4),
            "speedup_vs_flat": round(qps / flat_qps, 2),
            "runs": args.repeats,
        }
        if (key, p) in single:
            row["single_query_p50_ms"], row["single_query_p95_ms"] = (round(v, 3) for v in single[(key, p)])
        rows.append(row)
        logger.info("%s", rows[-1])
    return rows


def best_at_recall(rows: list[dict[str, Any]], n: int, k: int, floor: float) -> dict[str, Any] | None:
    ok = [r for r in rows if r["n"] == n and r["index_key"] != "Flat" and r[f"recall@{k}"] >= floor]
    return max(ok, key=lambda r: r["qps"]) if ok else None


def render_markdown(record: dict[str, Any]) -> str:
    """The rows as a Markdown table, one line per (size, index, search setting)."""
    k = record["params"]["k"]
    single = any("single_query_p50_ms" in r for r in record["rows"])
    head = f"| n | index | device | search | build s | QPS | × CPU Flat | recall@{k} |"
    rule = "|---:|---|---|---|---:|---:|---:|---:|"
    if single:
        head += " one query p50 / p95 ms |"
        rule += "---:|"
    lines = [f"FAISS scaling ({record['device']}; faiss {record['faiss_version']})", "", head, rule]
    for r in record["rows"]:
        line = (
            f"| {r['n']:,} | {r['index_key']} | {r['device']} | {r['search_params'] or '-'} | {r['build_s']} "
            f"| {r['qps']:,.0f} | {r['speedup_vs_flat']} | {r[f'recall@{k}']} |"
        )
        if single:
            line += f" {r.get('single_query_p50_ms', '-')} / {r.get('single_query_p95_ms', '-')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def gpu_name() -> str:
    """The GPU's name as nvidia-smi gives it (FAISS does not expose it)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = "unknown"
    return f"gpu 0 ({out}), {faiss.get_num_gpus()} visible to FAISS"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    general = parser.add_argument_group("general")
    general.add_argument("--out", type=Path, default=Path("bench/results/faiss_scaling.json"))
    general.add_argument("--threads", type=int, default=2, help="FAISS CPU threads")
    general.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="gpu: add GPU Flat and IVF")
    general.add_argument(
        "--cpu-ann",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build the CPU IVF and HNSW indexes (minutes at 1M); --no-cpu-ann keeps the CPU Flat alone",
    )
    general.add_argument("--repeats", type=int, default=2, help="timed runs per setting after one warmup")
    data = parser.add_argument_group("dataset")
    data.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    data.add_argument("--dim", type=int, default=384)
    data.add_argument("--clusters", type=int, default=1000)
    data.add_argument("--sigma", type=float, default=0.5, help="latent noise scale around a unit centre")
    data.add_argument("--latent-dim", type=int, default=16, help="within-cluster intrinsic dim")
    data.add_argument("--queries", type=int, default=300)
    data.add_argument("--seed", type=int, default=0)
    search = parser.add_argument_group("search")
    search.add_argument("--k", type=int, default=100)
    search.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    search.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512])
    search.add_argument("--single-queries", type=int, default=0, help="also time N one-query searches")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    centers = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    mixing = rng.standard_normal((args.latent_dim, args.dim), dtype=np.float32) / np.sqrt(args.latent_dim)
    queries = clustered_vectors(args.queries, args.dim, centers, mixing, args.sigma, args.seed + 1)
    record: dict[str, Any] = {
        "bench": "faiss_scaling",
        "git_sha": git_sha(),
        "device": f"cpu ({platform.processor() or platform.machine()}), faiss threads={args.threads}"
        + (f"; {gpu_name()}" if args.device == "gpu" else ""),
        "faiss_version": faiss.__version__,
        "params": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        record["rows"].extend(run_size(n, args, centers, mixing, queries))
        best = best_at_recall(record["rows"], n, args.k, 0.95)
        record.setdefault("best_at_recall95", {})[str(n)] = best
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(render_markdown(record))
        print(json.dumps({"n": n, "best_at_recall95": best}))


if __name__ == "__main__":
    main()
