"""`search-eval`: run named pipelines (variants) over a BEIR dataset and record retrieval quality.

    search-eval --dataset ../shared/data/scifact --split test \
        --pipeline dense --pipeline bm25 --pipeline hybrid

Indexes are built with `retriever_service.build_index` and cached under `--index-root`, keyed by the corpus
checksum, kind, shard count, factory and encoder; every query goes through `gateway.pipeline.SearchPipeline`
(the same code the gateway serves) over in-process shards, with top_k 100 so Recall@100 is meaningful.
nDCG@10, MRR@10 (RR@10) and Recall@100 come from ir_measures, averaged over every judged query of the split
(a query with no hits counts as zero).

Rows go to `<results-dir>/quality.json` (a rerun replaces rows with the same dataset, split and pipeline and
keeps the others) and `<results-dir>/quality.md` is regenerated from all rows.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from corpora.beir import BeirDataset
from evaluation.config import parse_eval_settings
from evaluation.offline_stack import (
    RERANKER_FACTORIES,
    load_offline_retrievers,
    offline_reranker,
    require_servable,
    run_queries,
)
from evaluation.results import QualityRow, render_markdown, score_run, update_results
from gateway.bootstrap import load_fusion_models
from gateway.learned_fusion import LearnedFusion
from gateway.pipeline import SearchPipeline
from gateway.variants import VariantBounds, load_variants
from search_common.corpus_file import DatasetError
from search_common.errors import SearchError
from search_common.logging_setup import configure_logging
from search_common.ports import Reranker

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def labelled_pipeline(name: str, encoder_label: str | None) -> str:
    """A quality row's pipeline name for a fine-tuned encoder: `dense` -> `dense-mnrl`,
    `hybrid20+ce` -> `hybrid-mnrl20+ce`; unchanged without a label."""
    if encoder_label is None:
        return name
    match = re.match(r"[a-z]+", name)
    head = match.group(0) if match else name
    return f"{head}-{encoder_label}{name[len(head) :]}"


def evaluate(
    dataset: Path,
    split: str,
    pipelines: Sequence[str],
    *,
    index_root: Path = Path("var/indexes"),
    num_shards: int = 1,
    reranker: Reranker | None = None,
    variants_path: Path | None = None,
    concurrency: int = 8,
    max_queries: int | None = None,
    prebuilt: Mapping[str, Path] | None = None,
    encoder_dir: Path | None = None,
    encoder_label: str | None = None,
    reranker_label: str | None = None,
    fusion_models: Mapping[str, LearnedFusion] | None = None,
) -> list[QualityRow]:
    """Evaluates each named variant over a BEIR dataset split; one QualityRow per variant.

    Args:
        dataset: a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).
        split: the qrels split to judge against.
        pipelines: variant names from the variants file.
        reranker: the in-process second stage for variants that rerank (None: such variants are refused).
        num_shards: dense index shards (the merged ranking is the same as one shard's).
        prebuilt: group ("dense", "bm25") -> an existing index version directory to use instead of the
            cache; it must have been built from this dataset's corpus (checked by checksum).
        encoder_dir: the bi-encoder of the dense group (None: the packaged one); its index is cached apart.
        encoder_label: rows of pipelines with a dense group are named for it (`labelled_pipeline`).
        reranker_label: rows of reranked pipelines end in `-<label>`, their reranker `<model>-<label>`.
        fusion_models: learned-fusion models by name, for variants with `fusion: learned`.

    Raises:
        DatasetError, ValueError: a bad dataset, or a variant that is unknown or needs a missing reranker.
    """

    beir = BeirDataset(dataset)
    table = load_variants(variants_path, VariantBounds())
    variants = [table.get(name) for name in pipelines]
    require_servable(variants, reranker, fusion_models or {})
    queries, qrels = beir.split_queries(split)
    if max_queries is not None:
        queries = queries[:max_queries]
        qrels = {q.query_id: qrels[q.query_id] for q in queries}
    groups_needed = {group for v in variants for group in v.groups}
    encoder = None
    if "dense" in groups_needed:
        from model_runtimes.bi_encoder import BiEncoder

        encoder = BiEncoder.load(encoder_dir)
    retrievers = load_offline_retrievers(
        beir, groups_needed, index_root=index_root, num_shards=num_shards, prebuilt=prebuilt, encoder=encoder
    )
    # Feedback variants refine a vector the pipeline embeds itself, with the dense shards' own encoder.
    query_encoder = encoder if any(v.uses_feedback for v in variants) else None
    pipeline = SearchPipeline(retrievers, reranker, query_encoder=query_encoder, fusion_models=fusion_models)
    rows: list[QualityRow] = []
    reranked_suffix = f"-{reranker_label}" if reranker_label else ""
    for variant in variants:
        started = time.monotonic()
        run = asyncio.run(run_queries(pipeline, variant, queries, concurrency=concurrency))
        scores = score_run(run, qrels)
        label = encoder_label if "dense" in variant.groups else None
        row = QualityRow(
            dataset=beir.name,
            split=split,
            pipeline=labelled_pipeline(variant.name, label) + (reranked_suffix if variant.reranks else ""),
            first_stage=labelled_pipeline(variant.first_stage, label),
            reranker=f"{variant.reranker_label}{reranked_suffix}" if variant.reranks else None,
            rerank_depth=variant.rerank_depth if variant.reranks else 0,
            fusion=variant.fusion if variant.reranks else "none",
            ndcg_at_10=round(scores["ndcg@10"], 4),
            mrr_at_10=round(scores["mrr@10"], 4),
            recall_at_100=round(scores["recall@100"], 4),
            queries=len(queries),
        )
        logger.info("%s in %.1fs: %s", variant.name, time.monotonic() - started, asdict(row))
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_eval_settings(argv, ["none", *sorted(RERANKER_FACTORIES)])
    configure_logging(settings.log_level)
    reranker: Reranker | None = None
    try:
        reranker = offline_reranker(
            settings.reranker, settings.reranker_artifact, settings.token_store, settings.extra_rerankers
        )
        rows = evaluate(
            settings.dataset,
            settings.split,
            settings.pipelines,
            index_root=settings.index_root,
            num_shards=settings.shards,
            reranker=reranker,
            variants_path=settings.variants,
            concurrency=settings.concurrency,
            max_queries=settings.max_queries,
            prebuilt=settings.prebuilt,
            encoder_dir=settings.encoder,
            encoder_label=settings.encoder_label,
            reranker_label=settings.reranker_label,
            fusion_models=load_fusion_models(settings.fusion_models),
        )
    except (DatasetError, ValueError, SearchError) as exc:
        print(f"search-eval: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if reranker is not None:
            asyncio.run(reranker.close())
    json_path, md_path = update_results(settings.results_dir, rows)
    print(render_markdown([r.to_json() for r in rows]))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
