"""Fit a learned-fusion model (LightGBM lambdarank) on the dev side of the train queries, and publish it.

The gateway's `fusion: learned` orders a re-ranked head by a model over every stage's ranks and standardised
scores (`gateway.learned_fusion`). This gathers exactly what the gateway would see for each dev query: each
retriever group's merged list from the gateway's own pipeline over in-process retrievers, the first stage
built from them, and the served cross-encoder artifact's scores of the head. Then, for each candidate depth
and number of boosting rounds, it measures nDCG@10 by 5-fold cross-validation over the dev queries (grouped
by query, seeded) beside the first stage, the reranker alone and the best RRF weight on the same folds. The
best setting is refitted on every dev query and written as an artifact whose manifest holds those figures;
a best setting that does not beat the first stage on dev is refused and nothing is written.

Dev = the seeded 20% of the train queries (`training.common.splits`); the bi-encoder and the cross-encoder
given must not have trained on them. Never touches the test split: measure test once, afterwards, with
`search-eval --fusion-model <artifact> --pipeline <a variant with fusion: learned>`.

Example:
    python -m training.fusion.fit_learned --dataset ../shared/data/scifact \\
        --reranker-artifact var/models/cross-encoder-bench/v-pq300-len256 --first-stage hybrid \\
        --out var/models/fusion/learned-hybrid
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np

from gateway.learned_fusion import (
    ARTIFACT_KIND,
    FEATURE_SET,
    FEATURES,
    MODEL_FILE,
    MONOTONE,
)
from gateway.variants import FirstStage
from search_common.artifacts import (
    ArtifactError,
    atomic_directory,
    new_version,
    sha256_file,
    write_manifest,
)
from search_common.logging_setup import configure_logging
from training.common.metrics import ndcg_at_10, ranking_to_run
from training.common.splits import seeded_folds
from training.fusion.evidence import (
    QueryEvidence,
    add_dev_arguments,
    check_dev_arguments,
    dev_evidence,
    load_scorer,
)

logger = logging.getLogger(__name__)

ROUNDS = (25, 50, 100, 200, 400)
FOLDS = 5
RRF_WEIGHTS = tuple(w / 10 for w in range(11))


def _labels(qrels: Mapping[str, int], doc_ids: Sequence[str]) -> list[int]:
    return [max(0, int(qrels.get(d, 0))) for d in doc_ids]


def train_ranker(
    evidence: Mapping[str, QueryEvidence],
    qrels: Mapping[str, Mapping[str, int]],
    query_ids: Sequence[str],
    depth: int,
    rounds: int,
    seed: int,
) -> lightgbm.Booster:
    """LightGBM lambdarank over the heads (first `depth` candidates) of the given queries."""
    rows = [evidence[q].features(depth) for q in query_ids]
    labels = [label for q in query_ids for label in _labels(qrels[q], evidence[q].head_ids(depth))]
    params: dict[str, Any] = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "lambdarank_truncation_level": depth,
        # Small trees and leaves of at least 20 rows: a dev split holds a few hundred queries.
        "num_leaves": 7,
        "min_data_in_leaf": 20,
        "learning_rate": 0.05,
        "feature_fraction": 1.0,
        "monotone_constraints": list(MONOTONE),
        "seed": seed,
        "deterministic": True,
        "num_threads": 1,
        "verbose": -1,
    }
    data = lightgbm.Dataset(
        np.vstack(rows),
        label=np.asarray(labels, dtype=np.float64),
        group=[len(r) for r in rows],
        feature_name=list(FEATURES),
    )
    return lightgbm.train(params, data, num_boost_round=rounds)


def cross_validate(
    evidence: Mapping[str, QueryEvidence],
    qrels: Mapping[str, Mapping[str, int]],
    depths: Sequence[int],
    seed: int,
) -> dict[str, Any]:
    """nDCG@10 on held-out folds for every (depth, rounds), beside the first stage, CE alone and best RRF."""
    query_ids = sorted(evidence)
    folds = seeded_folds(query_ids, seed, FOLDS)
    first = ndcg_at_10(qrels, ranking_to_run({q: evidence[q].ranking(0, fusion="none") for q in query_ids}))
    grid: list[dict[str, Any]] = []
    for depth in depths:
        alone = ndcg_at_10(
            qrels, ranking_to_run({q: evidence[q].ranking(depth, fusion="none") for q in query_ids})
        )
        rrf = {
            w: ndcg_at_10(
                qrels,
                ranking_to_run({q: evidence[q].ranking(depth, fusion="rrf", weight=w) for q in query_ids}),
            )
            for w in RRF_WEIGHTS
        }
        best_w = max(rrf, key=lambda w: (rrf[w], -w))
        for rounds in ROUNDS:
            held_out: dict[str, list[str]] = {}
            for k, fold in enumerate(folds):
                train_ids = [q for j, other in enumerate(folds) if j != k for q in other]
                model = train_ranker(evidence, qrels, train_ids, depth, rounds, seed)
                for q in fold:
                    predicted = model.predict(evidence[q].features(depth), num_threads=1)
                    held_out[q] = evidence[q].ranking(depth, fusion="learned", learned=list(predicted))
            learned = ndcg_at_10(qrels, ranking_to_run(held_out))
            grid.append(
                {
                    "depth": depth,
                    "rounds": rounds,
                    "learned": round(learned, 4),
                    "reranker_alone": round(alone, 4),
                    "rrf_best": round(rrf[best_w], 4),
                    "rrf_best_weight": best_w,
                }
            )
            logger.info("depth %d rounds %d: learned %.4f (CE alone %.4f, RRF %.4f at w=%.1f)",
                        depth, rounds, learned, alone, rrf[best_w], best_w)  # fmt: skip
    return {"first_stage": round(first, 4), "grid": grid}


def publish(
    out: Path,
    model: lightgbm.Booster,
    *,
    name: str,
    first_stage: FirstStage,
    depth: int,
    rounds: int,
    reranker: tuple[str, str],
    provenance: Mapping[str, Any],
) -> Path:
    """Writes the artifact under out/<version>, atomically, with its checksums and dev figures."""
    version = new_version()
    target = out / version
    with atomic_directory(target) as scratch:
        model.save_model(str(scratch / MODEL_FILE))
        write_manifest(
            scratch,
            {
                "kind": ARTIFACT_KIND,
                "name": name,
                "version": version,
                "feature_set": FEATURE_SET,
                "features": list(FEATURES),
                "first_stage": first_stage,
                "rerank_depth": depth,
                "boosting_rounds": rounds,
                "reranker": {"name": reranker[0], "version": reranker[1]},
                "lightgbm": lightgbm.__version__,
                "checksums": {MODEL_FILE: sha256_file(scratch / MODEL_FILE)},
                **provenance,
            },
        )
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.fusion.fit_learned",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dev_arguments(parser, seed_help="folds and LightGBM (the dev split is fixed)")
    parser.add_argument(
        "--reranker-artifact",
        type=Path,
        required=True,
        help="cross-encoder, late-interaction, poly-encoder or bi-encoder artifact",
    )
    parser.add_argument("--token-store", type=Path, default=None, help="a stored-vector artifact's store")
    parser.add_argument("--name", default=None, help="name variants use (default: learned-<first>)")
    parser.add_argument("--out", type=Path, required=True, help="artifact parent folder (versions below it)")
    args = parser.parse_args(argv)
    check_dev_arguments(parser, args)
    if not (args.reranker_artifact / "manifest.json").is_file():
        parser.error(f"--reranker-artifact {args.reranker_artifact}: not an artifact (no manifest.json)")
    configure_logging()

    beir, queries, dev_qrels, evidence = dev_evidence(
        args.dataset,
        args.first_stage,
        encoder=args.encoder,
        index_root=args.index_root,
        retrieval_depth=args.retrieval_depth,
        dev_fraction=args.dev_fraction,
    )
    try:
        reranker = load_scorer(args.reranker_artifact, args.token_store)
    except ArtifactError as exc:
        print(f"fit_learned: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    max_depth = max(args.depths)
    for qid, seen in evidence.items():
        head = seen.first_stage[:max_depth]
        head_texts = [c.document.model_text() for c in head]
        seen.rerank_scores.extend(float(s) for s in reranker.score(queries[qid], head_texts))

    report = cross_validate(evidence, dev_qrels, sorted(set(args.depths)), args.seed)
    best = max(report["grid"], key=lambda row: (row["learned"], -row["depth"], -row["rounds"]))
    logger.info("dev (5-fold): first stage %.4f; best %s", report["first_stage"], best)
    if best["learned"] <= report["first_stage"]:
        # The publish rule every model here follows: no artifact that loses to its own first stage.
        print(
            f"fit_learned: refused: the best learned fusion scores {best['learned']:.4f} on dev, not above "
            f"its first stage's {report['first_stage']:.4f}; nothing published",
            file=sys.stderr,
        )
        return 1
    model = train_ranker(evidence, dev_qrels, sorted(evidence), best["depth"], best["rounds"], args.seed)
    name = args.name or f"learned-{args.first_stage}"
    target = publish(
        args.out,
        model,
        name=name,
        first_stage=args.first_stage,
        depth=best["depth"],
        rounds=best["rounds"],
        reranker=(reranker.name, reranker.version),
        provenance={
            "fitted_on": {
                "dataset": beir.name,
                "split": "train (seeded dev side)",
                "dev_fraction": args.dev_fraction,
                "dev_queries": len(queries),
                "seed": args.seed,
                "retrieval_depth": args.retrieval_depth,
                "encoder": str(args.encoder) if args.encoder else "packaged",
                "reranker_artifact": str(args.reranker_artifact),
            },
            "dev": {"first_stage_ndcg@10": report["first_stage"], "best": best, "grid": report["grid"]},
        },
    )
    print(json.dumps({"artifact": str(target), "dev_first_stage": report["first_stage"], "best": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
