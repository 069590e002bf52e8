"""Choose a variant's re-rank depth and RRF weights on the dev side of the train queries, for one reranker or
several fused at once.

A variant may send its head to several rerankers and fuse their orders with the first stage's by weighted RRF
(`gateway.merge.rerank_order`, `reranker: [a, b]` with `fusion_weight: [wa, wb]`). This gathers what the
gateway would see for each dev query (each retriever group's merged list through the gateway's own pipeline,
and every given reranker's scores of the head, from the served artifacts' own runtimes), then measures
nDCG@10 for every depth and every weight tuple on a grid (each weight a multiple of `--step`, together at
most 1; the first stage keeps the rest).

Choosing among a few hundred settings on a few hundred queries flatters the winner, so the report also gives
the selection's 5-fold estimate: for each fold, the best setting on the other four, scored on that fold. The
best setting is refused (exit 1) unless that estimate beats the first stage.

Dev = the seeded 20% of the train queries (`training.common.splits`); the bi-encoder and every reranker given
must not have trained on them. Never touches the test split: write the chosen setting into a variant, then
measure test once with `search-eval --reranker ... --extra-reranker ...`.

Example:
    python -m training.fusion.fit_rrf --dataset ../shared/data/scifact --encoder <dev-split bi-encoder> \\
        --reranker var/models/colbert/<v>,var/indexes/scifact-colbert/<v> \\
        --reranker "$(search-packaged-model all-mpnet-base-v2)",var/indexes/scifact-mpnet/v1 \\
        --out bench/results/fit_rrf_scifact.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ir_measures

from evaluation.config import parse_extra_reranker
from gateway.merge import first_stage_order, rerank_order
from search_common.artifacts import ArtifactError
from search_common.documents import Candidate
from search_common.logging_setup import configure_logging
from training.common.metrics import NDCG_AT_10, ranking_to_run
from training.common.splits import seeded_folds
from training.fusion.evidence import add_dev_arguments, check_dev_arguments, dev_evidence, load_scorer

logger = logging.getLogger(__name__)

FOLDS = 5


@dataclass(frozen=True, slots=True)
class Setting:
    """One point of the grid: the re-rank depth and each reranker's RRF weight (0 leaves it out)."""

    depth: int
    weights: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"depth": self.depth, "weights": list(self.weights)}


def weight_grid(rerankers: int, step: float) -> list[tuple[float, ...]]:
    """Every tuple of `rerankers` weights, multiples of `step`, summing to at most 1, not all zero."""
    steps = round(1.0 / step)
    if steps <= 0 or abs(steps * step - 1.0) > 1e-9:
        raise ValueError(f"--step must divide 1 (0.1, 0.05, 0.25...), got {step}")
    tuples = itertools.product(range(steps + 1), repeat=rerankers)
    return [tuple(round(n * step, 6) for n in t) for t in tuples if 0 < sum(t) <= steps]


def fused_ranking(
    first_stage: Sequence[Candidate], scores: Sequence[Sequence[float]], setting: Setting
) -> list[str]:
    """The doc-id order the gateway gives a variant with these rerankers at this setting."""
    used = [(s[: setting.depth], w) for s, w in zip(scores, setting.weights, strict=True) if w > 0]
    if not used:
        return [c.document.doc_id for c in first_stage_order(first_stage)]
    (primary, weight), more = used[0], used[1:]
    ordered = rerank_order(first_stage, primary, fusion="rrf", fusion_weight=weight, more_rerankers=more)
    return [c.document.doc_id for c in ordered]


def per_query_ndcg(
    qrels: Mapping[str, Mapping[str, int]], ranked: Mapping[str, list[str]]
) -> dict[str, float]:
    """nDCG@10 of each judged query (0 for one with no ranking)."""
    judged = {q: dict(docs) for q, docs in qrels.items()}
    values = {
        m.query_id: m.value for m in ir_measures.iter_calc([NDCG_AT_10], judged, ranking_to_run(ranked))
    }
    return {q: float(values.get(q, 0.0)) for q in judged}


def _mean(values: Mapping[str, float], queries: Sequence[str]) -> float:
    return sum(values[q] for q in queries) / len(queries)


def choose(
    first_stage: Mapping[str, float], grid: Mapping[Setting, Mapping[str, float]], seed: int
) -> dict[str, Any]:
    """The best setting on every query, and the selection's held-out estimate over seeded folds.

    Ties go to the shallower depth, then to the smaller total weight (the lighter change)."""

    def best_on(queries: Sequence[str]) -> Setting:
        return max(grid, key=lambda s: (round(_mean(grid[s], queries), 6), -s.depth, -sum(s.weights)))

    queries = sorted(first_stage)
    held_out: dict[str, float] = {}
    chosen_per_fold = []
    for fold in seeded_folds(queries, seed, FOLDS):
        fold_set = set(fold)
        picked = best_on([q for q in queries if q not in fold_set])
        chosen_per_fold.append(picked.to_json())
        held_out.update({q: grid[picked][q] for q in fold})
    best = best_on(queries)
    return {
        "best": {**best.to_json(), "ndcg@10": round(_mean(grid[best], queries), 4)},
        "cross_validated_ndcg@10": round(_mean(held_out, queries), 4),
        "chosen_per_fold": chosen_per_fold,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.fusion.fit_rrf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dev_arguments(parser, seed_help="folds of the estimate (the dev split is fixed)")
    parser.add_argument(
        "--reranker",
        action="append",
        required=True,
        type=parse_extra_reranker,
        metavar="ARTIFACT[,TOKEN_STORE]",
        help="a reranker artifact, with its token store for a stored-vector kind (repeatable, in the "
        "order the variant will list them)",
    )
    parser.add_argument("--step", type=float, default=0.1, help="weight grid step (it must divide 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the report here as JSON")
    args = parser.parse_args(argv)
    check_dev_arguments(parser, args)
    for artifact, store in args.reranker:
        if not (artifact / "manifest.json").is_file():
            parser.error(f"--reranker {artifact}: not an artifact (no manifest.json)")
        if store is not None and not store.is_dir():
            parser.error(f"--reranker {artifact},{store}: no token store there")
    try:
        weights = weight_grid(len(args.reranker), args.step)
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging()

    try:
        scorers = [load_scorer(artifact, store) for artifact, store in args.reranker]
    except ArtifactError as exc:
        print(f"fit_rrf: error: {exc}", file=sys.stderr)
        return 2
    beir, queries, qrels, evidence = dev_evidence(
        args.dataset,
        args.first_stage,
        encoder=args.encoder,
        index_root=args.index_root,
        retrieval_depth=args.retrieval_depth,
        dev_fraction=args.dev_fraction,
    )
    max_depth = max(args.depths)
    scores: dict[str, list[list[float]]] = {}
    for qid, seen in evidence.items():
        head = [c.document.model_text() for c in seen.first_stage[:max_depth]]
        scores[qid] = [[float(s) for s in scorer.score(queries[qid], head)] for scorer in scorers]
    logger.info("scored %d dev queries' top %d with %d reranker(s)", len(evidence), max_depth, len(scorers))

    def ndcg(setting: Setting) -> dict[str, float]:
        ranked = {q: fused_ranking(evidence[q].first_stage, scores[q], setting) for q in evidence}
        return per_query_ndcg(qrels, ranked)

    first = per_query_ndcg(
        qrels, {q: [c.document.doc_id for c in e.first_stage] for q, e in evidence.items()}
    )
    grid = {Setting(d, w): ndcg(Setting(d, w)) for d in sorted(set(args.depths)) for w in weights}
    names = [f"{scorer.name}@{scorer.version}" for scorer in scorers]
    query_ids = sorted(first)
    report: dict[str, Any] = {
        "dataset": beir.name,
        "split": "train (seeded dev side)",
        "dev_fraction": args.dev_fraction,
        "dev_queries": len(query_ids),
        "first_stage": args.first_stage,
        "encoder": str(args.encoder) if args.encoder else "packaged",
        "rerankers": names,
        "first_stage_ndcg@10": round(_mean(first, query_ids), 4),
        **choose(first, grid, args.seed),
        "grid": [{**s.to_json(), "ndcg@10": round(_mean(v, query_ids), 4)} for s, v in grid.items()],
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    summary = {k: v for k, v in report.items() if k != "grid"}
    print(json.dumps(summary, indent=2))
    estimate, first_stage = report["cross_validated_ndcg@10"], report["first_stage_ndcg@10"]
    if estimate <= first_stage:
        print(
            f"fit_rrf: refused: the chosen setting's held-out estimate {estimate:.4f} does not beat the "
            f"first stage's {first_stage:.4f}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
