"""`search-ab`: offline A/B of pipeline variants, quality and latency side by side.

    search-ab --dataset ../shared/data/scifact --split test --shards 3 \
        --variant dense --variant bm25 --variant hybrid

Every query goes through `gateway.pipeline.SearchPipeline` (the gateway's own code) over in-process shards,
built or reused exactly as `search-eval` does (`evaluation.offline_stack.ensure_index`). Quality is scored by
`evaluation.results.score_run` (nDCG@10, MRR@10, Recall@100 over every judged query). Latency is the wall time
of each `SearchPipeline.search` call with one query in flight, so it has no queueing in it; `--warmup` queries
per variant run first and are not timed. p50/p95 are linear-interpolated percentiles (numpy) in milliseconds.

The report is one JSON document (git sha, host cores, settings, one row per variant) and a Markdown table,
both rewritten on every run: an A/B is only meaningful when its rows were measured together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corpora.beir import BeirDataset, Query
from evaluation.config import AbSettings, parse_ab_settings
from evaluation.offline_stack import (
    RERANKER_FACTORIES,
    load_offline_retrievers,
    offline_reranker,
    require_servable,
)
from evaluation.provenance import git_sha
from evaluation.results import EVAL_TOP_K, score_run
from gateway.bootstrap import load_fusion_models
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import Variant, VariantBounds, load_variants
from search_common.artifacts import ArtifactError
from search_common.corpus_file import DatasetError
from search_common.errors import SearchError
from search_common.logging_setup import configure_logging
from search_common.ports import Reranker

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AbRow:
    variant: str
    first_stage: str
    retrieval_depth: int
    reranker: str
    rerank_depth: int
    ndcg_at_10: float
    mrr_at_10: float
    recall_at_100: float
    latency_p50_ms: float
    latency_p95_ms: float
    degraded: int
    queries: int

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["ndcg@10"] = row.pop("ndcg_at_10")
        row["mrr@10"] = row.pop("mrr_at_10")
        row["recall@100"] = row.pop("recall_at_100")
        return row


def latency_quantiles(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds, rounded to 0.01 ms; (0, 0) for no samples."""
    if not seconds:
        return 0.0, 0.0
    p50, p95 = np.percentile(np.asarray(seconds, dtype=np.float64) * 1000.0, [50, 95])
    return round(float(p50), 2), round(float(p95), 2)


async def timed_run(
    pipeline: SearchPipeline, variant: Variant, queries: Sequence[Query], warmup: int = 0
) -> tuple[dict[str, list[str]], list[float], int]:
    """Each query's ranked doc ids, its wall time in seconds, and how many answers were degraded.

    Queries run one at a time so each time is the pipeline's own latency, not time spent queueing.
    """
    depth = max(variant.retrieval_depth, EVAL_TOP_K)
    rerank_depth = variant.rerank_depth if variant.reranks else 0

    def request(query: Query) -> SearchQuery:
        return SearchQuery(query.text, EVAL_TOP_K, variant, depth, rerank_depth)

    for query in queries[:warmup]:
        await pipeline.search(request(query))
    run: dict[str, list[str]] = {}
    seconds: list[float] = []
    degraded = 0
    for query in queries:
        started = time.perf_counter()
        outcome = await pipeline.search(request(query))
        seconds.append(time.perf_counter() - started)
        degraded += int(outcome.coverage.degraded)
        run[query.query_id] = [hit.document.doc_id for hit in outcome.hits]
    return run, seconds, degraded


def run_ab(settings: AbSettings, reranker: Reranker | None) -> tuple[list[AbRow], dict[str, Any]]:
    """Runs every variant over the split; the rows and the run's context (dataset, split, host, sha).

    Raises:
        DatasetError, ValueError: a bad dataset, or a variant that is unknown or needs a missing reranker.
    """
    beir = BeirDataset(settings.dataset)
    table = load_variants(settings.variants_file, VariantBounds())
    variants = [table.get(name) for name in settings.variants]
    fusion_models = load_fusion_models(settings.fusion_models)
    require_servable(variants, reranker, fusion_models)
    queries, qrels = beir.split_queries(settings.split)
    if settings.max_queries is not None:
        queries = queries[: settings.max_queries]
        qrels = {q.query_id: qrels[q.query_id] for q in queries}
    retrievers = load_offline_retrievers(
        beir,
        {g for v in variants for g in v.groups},
        index_root=settings.index_root,
        num_shards=settings.shards,
        prebuilt=settings.prebuilt,
        encoder_dir=settings.encoder,
    )
    pipeline = SearchPipeline(retrievers, reranker, fusion_models=fusion_models)
    rows: list[AbRow] = []
    for variant in variants:
        run, seconds, degraded = asyncio.run(timed_run(pipeline, variant, queries, settings.warmup))
        scores = score_run(run, qrels)
        p50, p95 = latency_quantiles(seconds)
        row = AbRow(
            variant=variant.name,
            first_stage=variant.first_stage,
            retrieval_depth=variant.retrieval_depth,
            reranker=variant.reranker_label or "none",
            rerank_depth=variant.rerank_depth if variant.reranks else 0,
            ndcg_at_10=round(scores["ndcg@10"], 4),
            mrr_at_10=round(scores["mrr@10"], 4),
            recall_at_100=round(scores["recall@100"], 4),
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            degraded=degraded,
            queries=len(queries),
        )
        logger.info("%s: %s", variant.name, row.to_json())
        rows.append(row)
    context = {
        "dataset": beir.name,
        "split": settings.split,
        "dense_shards": settings.shards,
        "reranker_adapter": settings.reranker,
        "git_sha": git_sha(short=True),
        "host": {"machine": platform.machine(), "cores": os.cpu_count() or 0, "device": "cpu"},
        "latency": "wall time of SearchPipeline.search, one query in flight, in-process shards",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return rows, context


def render_markdown(rows: Sequence[Mapping[str, Any]], context: Mapping[str, Any]) -> str:
    lines = [
        f"# Offline A/B: {context.get('dataset')} {context.get('split')}",
        "",
        "Generated by `search-ab` (evaluation/ab_report.py); do not edit by hand. "
        f"Commit {context.get('git_sha')}, {context.get('host', {}).get('cores')} CPU cores, "
        f"{context.get('measured_at')}.",
        f"Latency: {context.get('latency')}.",
        "",
        "| variant | first stage | reranker | nDCG@10 | MRR@10 | Recall@100 "
        "| p50 ms | p95 ms | degraded | queries |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        reranker = r["reranker"] if r["reranker"] == "none" else f"{r['reranker']} @{r['rerank_depth']}"
        lines.append(
            f"| {r['variant']} | {r['first_stage']} @{r['retrieval_depth']} | {reranker} "
            f"| {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | {r['recall@100']:.4f} "
            f"| {r['latency_p50_ms']:.1f} | {r['latency_p95_ms']:.1f} | {r['degraded']} | {r['queries']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    rows: Sequence[AbRow], context: Mapping[str, Any], out_json: Path, out_md: Path
) -> tuple[Path, Path]:
    """Writes the JSON (atomically) and the Markdown table; both replace any earlier run."""
    payload = {**context, "rows": [row.to_json() for row in rows]}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    scratch = out_json.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    scratch.replace(out_json)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(render_markdown(payload["rows"], context), encoding="utf-8")
    return out_json, out_md


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_ab_settings(argv, ["none", *sorted(RERANKER_FACTORIES)])
    configure_logging(settings.log_level)
    try:
        reranker = offline_reranker(
            settings.reranker, settings.reranker_artifact, settings.token_store, settings.extra_rerankers
        )
    except ArtifactError as exc:
        print(f"search-ab: error: {exc}", file=sys.stderr)
        return 2
    try:
        rows, context = run_ab(settings, reranker)
    except (DatasetError, ValueError, SearchError) as exc:
        print(f"search-ab: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if reranker is not None:
            asyncio.run(reranker.close())
    json_path, md_path = write_report(rows, context, settings.out_json, settings.out_md)
    print(render_markdown([r.to_json() for r in rows], context))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
