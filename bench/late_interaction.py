"""Late interaction against the cross-encoder: pairs per second and nDCG@10 on the same candidate sets.

Each SciFact test query's top-`--depth` hybrid candidates (the cached first stage of
training.cross_encoder.mine) form one set. Every set is scored by every scorer, in an order rotated per set
so the shared machine's noise falls on all alike; the first `--warmup` sets are not timed. Scorers, each the
runtime the reranker's in-process backend serves:

- `cross_encoder`: `CrossEncoderRuntime.score` on the cross-encoder artifact, with the engine `--backend
  auto` picks here (int8 ONNX on a CPU without AMX), one single-threaded worker per core;
- `late_interaction`: `LateInteractionRuntime.score` over the token store built by `search-build-index --kind
  late-interaction`: one query encoding and MaxSim over the stored document tokens;
- `late_interaction_no_store`: the same model encoding every document at request time (what serving costs
  when the tokens are neither stored nor sent).
- with `--stored-vector KIND ARTIFACT STORE`: a poly-encoder (`poly_encoder`) or the re-scoring bi-encoder
  (`bi_encoder`, e.g. the packaged all-mpnet-base-v2) over the document vectors stored for it.

The other way to get the tokens to the reranker, sending them with the candidates, is sized rather than
timed: the record gives the bytes a set's tokens would add to each RerankRequest.

Writes `late_interaction.json` (with `late_interaction_speedup_vs_ce`: the late-interaction pairs/s over the
cross-encoder's, goal >= 10) and `late_interaction.md` under bench/results.

Example:
    python bench/late_interaction.py --dataset ../shared/data/scifact \\
        --ce-artifact var/models/cross-encoder-candidates/ce-lw-mean-pq300-len256-e1/<version> \\
        --colbert-artifact var/models/colbert/<version> --token-store var/indexes/scifact-colbert/<version> \\
        --stored-vector bi-encoder "$(search-packaged-model all-mpnet-base-v2)" var/indexes/scifact-mpnet/v1
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from model_runtimes.cross_encoder.manifest import choose_engine, read_cross_encoder_manifest
from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from model_runtimes.hardware import cpu_flags, cpu_model
from model_runtimes.late_interaction import LateInteractionModel, LateInteractionRuntime
from model_runtimes.stored_vector_loading import load_stored_vector_runtime
from model_runtimes.token_store import TokenStores
from search_common.logging_setup import configure_logging
from training.common.metrics import ndcg_at_10, ranking_to_run
from training.cross_encoder.mine import rerank_sets

logger = logging.getLogger(__name__)

SetScorer = Callable[[str, list[str]], npt.NDArray[np.float32]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/data/scifact"))
    parser.add_argument("--ce-artifact", type=Path, required=True, help="cross-encoder artifact version dir")
    parser.add_argument("--colbert-artifact", type=Path, required=True, help="late-interaction artifact")
    parser.add_argument("--token-store", type=Path, required=True, help="its token store (index version)")
    parser.add_argument(
        "--stored-vector",
        nargs=3,
        action="append",
        default=[],
        metavar=("KIND", "ARTIFACT", "STORE"),
        help="another stored-vector model also timed (poly-encoder or bi-encoder), with its document "
        "vectors (an index version); repeatable",
    )
    parser.add_argument("--queries", type=int, default=60, help="first N test queries (sorted ids)")
    parser.add_argument("--depth", type=int, default=30, help="pairs per set")
    parser.add_argument("--warmup", type=int, default=3, help="sets not timed")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of the late-interaction runtime"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/late_interaction.json"))
    args = parser.parse_args()
    if args.queries <= args.warmup:
        parser.error("--queries must exceed --warmup")
    for kind, _, _ in args.stored_vector:
        if kind not in ("poly-encoder", "bi-encoder"):
            parser.error(f"--stored-vector {kind}: expected poly-encoder or bi-encoder")
    configure_logging()
    torch.set_num_threads(args.threads)

    chosen = rerank_sets(args.dataset, queries=args.queries, depth=args.depth)
    qrels_all = BeirDataset(args.dataset).qrels("test")
    query_ids = [s.query_id for s in chosen]
    queries = {s.query_id: s.query for s in chosen}
    sets = {s.query_id: s.texts for s in chosen}
    candidates = {s.query_id: s.doc_ids for s in chosen}

    engine = choose_engine("auto", read_cross_encoder_manifest(args.ce_artifact, verify=False))
    cross_encoder = CrossEncoderRuntime.load(args.ce_artifact, engine=engine)
    model = LateInteractionModel.load(args.colbert_artifact)
    stores = TokenStores.load(args.token_store)
    stored = LateInteractionRuntime(model, token_stores=stores)
    unstored = LateInteractionRuntime(model)
    scorers: dict[str, SetScorer] = {
        "cross_encoder": lambda q, t: cross_encoder.score(q, t),
        "late_interaction": lambda q, t: stored.score(q, t),
        "late_interaction_no_store": lambda q, t: unstored.score(q, t),
    }
    others = {
        kind.replace("-", "_"): (Path(artifact), Path(store)) for kind, artifact, store in args.stored_vector
    }
    for name, (artifact, store) in others.items():
        scorers[name] = load_stored_vector_runtime(name.replace("_", "-"), artifact, token_store=store).score
    names = list(scorers)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    ranked: dict[str, dict[str, list[str]]] = {n: {} for n in names}
    token_bytes: list[int] = []
    for i, qid in enumerate(query_ids):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            started = time.perf_counter()
            scores = scorers[name](queries[qid], sets[qid])
            elapsed = time.perf_counter() - started
            if i >= args.warmup:
                seconds[name].append(elapsed)
            ids = candidates[qid]
            ranked[name][qid] = [d for _, d in sorted(zip(scores, ids, strict=True), key=lambda t: -t[0])]
        token_bytes.append(sum(found.nbytes for t in sets[qid] if (found := stores.get(t)) is not None))
        logger.info("set %d/%d scored", i + 1, len(query_ids))

    qrels = {q: qrels_all[q] for q in query_ids}
    rows = {
        name: {
            "pairs_per_s": round(args.depth / statistics.median(seconds[name]), 1),
            "p50_ms": round(1000 * statistics.median(seconds[name]), 1),
            "p95_ms": round(1000 * float(np.percentile(seconds[name], 95)), 1),
            "ndcg@10": round(ndcg_at_10(qrels, ranking_to_run(ranked[name])), 4),
        }
        for name in names
    }
    first_stage = round(ndcg_at_10(qrels, ranking_to_run({q: candidates[q] for q in query_ids})), 4)
    speedup = rows["late_interaction"]["pairs_per_s"] / rows["cross_encoder"]["pairs_per_s"]
    record: dict[str, Any] = {
        "late_interaction_speedup_vs_ce": round(speedup, 2),
        "no_store_speedup_vs_ce": round(
            rows["late_interaction_no_store"]["pairs_per_s"] / rows["cross_encoder"]["pairs_per_s"], 2
        ),
        "scorers": rows,
        "first_stage_ndcg@10": first_stage,
        "queries": len(query_ids),
        "timed_sets": len(query_ids) - args.warmup,
        "depth": args.depth,
        "cross_encoder": {
            "artifact": str(args.ce_artifact),
            "engine": engine,
            "max_length": cross_encoder.max_length,
        },
        "late_interaction": {
            "artifact": str(model.directory),
            "document_length": stored.max_length,
            "token_store": str(args.token_store),
            "stored_documents": len(stores),
        },
        "stored_vector_models": {
            name: {
                "artifact": str(artifact),
                "token_store": str(store),
                "speedup_vs_ce": round(rows[name]["pairs_per_s"] / rows["cross_encoder"]["pairs_per_s"], 2),
            }
            for name, (artifact, store) in others.items()
        },
        # Sending the tokens with the candidates instead: float16 bytes per RerankRequest, median over sets.
        "tokens_in_request_bytes_p50": int(statistics.median(token_bytes)),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "threads": args.threads,
        "python": platform.python_version(),
        "git_sha": git_sha(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Late interaction (and the other stored-vector models) against the cross-encoder",
        "",
        f"`python bench/late_interaction.py` at {record['written']} (commit {record['git_sha'][:7]}); "
        f"{len(query_ids)} SciFact test queries, their hybrid top {args.depth}, "
        f"{record['timed_sets']} sets timed, "
        f"scorers interleaved. CPU: {record['cpu']}, flags {', '.join(record['cpu_flags'])}.",
        "",
        "| scorer | pairs/s | p50 ms per set | p95 ms | nDCG@10 (alone, this depth) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {n} | {r['pairs_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['ndcg@10']} |"
            for n, r in rows.items()
        ),
        "",
        f"First stage on these queries: nDCG@10 {first_stage}. "
        f"`late_interaction_speedup_vs_ce` = **{record['late_interaction_speedup_vs_ce']}** (goal >= 10). "
        f"Sending a set's stored tokens with the candidates would add about "
        f"{record['tokens_in_request_bytes_p50'] / 1e6:.1f} MB to each rerank request.",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    logger.info("wrote %s: speedup %.2f", args.out, speedup)


if __name__ == "__main__":
    main()
