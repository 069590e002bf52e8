"""Fit the rerank depth and fusion weight of a two-stage variant on the dev side of the train queries.

A variant's final order fuses the cross-encoder with its own first stage (`gateway.merge.rerank_order`, RRF,
cross-encoder weight w). The right depth and w depend on both stages, so a new first stage (a fine-tuned
bi-encoder) needs them fitted again. This runs the first stage through the gateway's own pipeline over
in-process retrievers (`evaluation.offline_stack.load_offline_retrievers`), scores each dev query's head once
with the served cross-encoder artifact, and measures nDCG@10 for every (depth, w) on the grid with the same
report training uses (`training.cross_encoder.evaluate.rerank_report`).

Dev = the seeded 20% of the train queries (`training.common.splits`); the bi-encoder given must not have
trained on them (a run with `--dev-fraction 0.2`), nor must the cross-encoder. Never touches the test split.

Example:
    python -m training.cross_encoder.fit_fusion --dataset ../shared/data/scifact \\
        --encoder var/models/bi-encoder/v20261127T120938Z --reranker-artifact var/models/cross-encoder/v1 \\
        --first-stage hybrid --out var/eval/fusion-hybrid-mnrl-pq.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from corpora.beir import BeirDataset
from evaluation.offline_stack import load_offline_retrievers
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import VariantBounds, load_variants
from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from search_common.documents import Document
from search_common.logging_setup import configure_logging
from training.common.splits import dev_queries
from training.cross_encoder.evaluate import rerank_report

logger = logging.getLogger(__name__)


async def _first_stage(
    pipeline: SearchPipeline, variant_name: str, variants: Path | None, queries: dict[str, str], depth: int
) -> dict[str, list[Document]]:
    """Each query's top `depth` documents from the first-stage variant, best first."""
    variant = load_variants(variants, VariantBounds()).get(variant_name)
    if variant.reranks:
        raise ValueError(f"--first-stage {variant_name!r} re-ranks; name a first-stage variant")
    heads: dict[str, list[Document]] = {}
    for qid, text in queries.items():
        outcome = await pipeline.search(SearchQuery(text, depth, variant, max(depth, 100), 0))
        heads[qid] = [hit.document for hit in outcome.hits]
    return heads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, default=None, help="bi-encoder artifact (default: packaged)")
    parser.add_argument("--reranker-artifact", type=Path, required=True, help="cross-encoder artifact")
    parser.add_argument("--first-stage", default="hybrid", help="a first-stage variant name")
    parser.add_argument("--variants", type=Path, default=None, help="variants YAML (default: packaged)")
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--index-root", type=Path, default=Path("var/indexes"))
    parser.add_argument("--out", type=Path, required=True, help="JSON record")
    args = parser.parse_args(argv)
    if any(d <= 0 for d in args.depths):
        parser.error("--depths must be positive")
    configure_logging()

    beir = BeirDataset(args.dataset)
    queries, dev_qrels = dev_queries(beir, dev_fraction=args.dev_fraction)
    retrievers = load_offline_retrievers(
        beir,
        {"dense", "bm25"},
        index_root=args.index_root,
        num_shards=1,
        prebuilt=None,
        encoder_dir=args.encoder,
    )
    max_depth = max(args.depths)
    heads = asyncio.run(
        _first_stage(SearchPipeline(retrievers), args.first_stage, args.variants, queries, max_depth)
    )
    runtime = CrossEncoderRuntime.load(args.reranker_artifact)
    scores = {q: [float(s) for s in runtime.score(queries[q], [d.model_text() for d in head])]
              for q, head in heads.items()}  # fmt: skip
    report = rerank_report(
        scores,
        {q: [d.doc_id for d in head] for q, head in heads.items()},
        dev_qrels,
        {d.doc_id: d for head in heads.values() for d in head},
        depths=args.depths,
    )
    depth, weight, fused = report.best_fused()
    record = {
        "dataset": beir.name,
        "dev_queries": len(queries),
        "first_stage": args.first_stage,
        "encoder": str(args.encoder) if args.encoder else "packaged",
        "reranker_artifact": str(args.reranker_artifact),
        "first_stage_ndcg@10": report.first_stage,
        "ce_ndcg@10": report.as_dict()["ce"],
        "grid": report.as_dict()["fused"],
        "best": {"depth": depth, "weight": weight, "ndcg@10": fused},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    logger.info("dev first stage %.4f; best %s", report.first_stage, record["best"])
    print(json.dumps(record["best"]))


if __name__ == "__main__":
    main()
