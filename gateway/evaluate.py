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
import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import ir_measures
from ir_measures import RR, R, nDCG

from gateway.config import parse_eval_settings
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import Variant, VariantBounds, load_variants
from search_common.artifacts import ArtifactError, read_manifest, sha256_file
from search_common.beir import BeirDataset, DatasetError, Query
from search_common.errors import SearchError
from search_common.logging_setup import configure_logging
from search_common.ports import Reranker, Retriever

if TYPE_CHECKING:
    from retriever_service.encoder import BiEncoder

logger = logging.getLogger(__name__)

EVAL_TOP_K = 100
MEASURES = {"ndcg@10": nDCG @ 10, "mrr@10": RR @ 10, "recall@100": R @ 100}
# Where trained cross-encoder artifacts are published (training.cross_encoder.export); the newest wins.
DEFAULT_RERANKER_ARTIFACTS = Path("var/models/cross-encoder")


def _embedded_reranker(backend: Literal["onnx", "torch"]) -> Callable[[Path | None], Reranker]:
    def build(artifact: Path | None) -> Reranker:
        """The embedded second stage on one engine, without a cache (every query is scored once)."""
        # Imported here: the gateway itself never depends on the reranker's inference stack.
        from reranker_service.bootstrap import build_local_reranker

        return build_local_reranker(artifact or DEFAULT_RERANKER_ARTIFACTS, cache="none", backend=backend)

    return build


# Named in-process rerankers for --reranker: name -> factory(artifact dir from --reranker-artifact, or None
# for the factory's default: the newest artifact under DEFAULT_RERANKER_ARTIFACTS). onnx is the int8 graph
# the quality rows were measured with; torch the artifact's bfloat16 program.
RERANKER_FACTORIES: dict[str, Callable[[Path | None], Reranker]] = {
    "onnx": _embedded_reranker("onnx"),
    "torch": _embedded_reranker("torch"),
}


@dataclass(frozen=True, slots=True)
class QualityRow:
    dataset: str
    split: str
    pipeline: str
    ndcg_at_10: float
    mrr_at_10: float
    recall_at_100: float
    queries: int

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "pipeline": self.pipeline,
            "ndcg@10": self.ndcg_at_10,
            "mrr@10": self.mrr_at_10,
            "recall@100": self.recall_at_100,
            "queries": self.queries,
        }


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def ensure_index(
    corpus: Path,
    index_root: Path,
    *,
    kind: Literal["dense", "bm25"],
    num_shards: int = 1,
    factory: str = "Flat",
    encoder: Any = None,
    dataset_name: str | None = None,
) -> Path:
    """An index over `corpus` under `index_root`, reused when one with the same inputs exists.

    The cache key holds the corpus checksum, kind, shard count, factory and (dense) encoder identity, so a
    changed corpus or model never reuses a stale index.
    """
    from retriever_service.build_index import build_index  # the retriever's builder, used as a library

    corpus_sha = sha256_file(corpus)
    encoder_id = ""
    if kind == "dense":
        if encoder is None:
            from retriever_service.encoder import BiEncoder

            encoder = BiEncoder.load()
        encoder_id = str(encoder.identity)
    name = dataset_name or corpus.parent.name
    if kind == "dense":
        key = f"dense-{num_shards}sh-{_safe(factory)}-{corpus_sha[:16]}-{_safe(encoder_id)[:24]}"
    else:
        from retriever_service.bm25 import BM25_PARAMS, TOKENIZER

        settings_sha = hashlib.sha256(
            json.dumps([BM25_PARAMS, TOKENIZER], sort_keys=True).encode()
        ).hexdigest()
        key = f"bm25-{corpus_sha[:16]}-{settings_sha[:8]}"
    out = index_root / _safe(name) / key
    if out.is_dir():
        try:
            manifest = read_manifest(out, required=("corpus_sha256", "num_shards"))
            if manifest["corpus_sha256"] == corpus_sha and manifest["num_shards"] == num_shards:
                logger.info("reusing %s index %s", kind, out)
                return out
            logger.warning("cached index %s does not match its key; rebuilding", out)
        except ArtifactError as exc:
            logger.warning("cached index unusable (%s); rebuilding", exc)
    logger.info("building %s index (%d shards) at %s", kind, num_shards, out)
    return build_index(
        corpus,
        out,
        kind=kind,
        num_shards=num_shards if kind == "dense" else 1,
        factory=factory,
        name=name,
        encoder=encoder,
        overwrite=True,
    )


def prebuilt_index(prebuilt: Mapping[str, Path] | None, kind: str, corpus: Path) -> Path | None:
    """The prebuilt index given for `kind`, checked to be that kind and built from `corpus`."""
    if not prebuilt or kind not in prebuilt:
        return None
    path = prebuilt[kind]
    try:
        manifest = read_manifest(path, required=("kind", "corpus_sha256"))
    except ArtifactError as exc:
        raise ValueError(f"--{kind}-index: {exc}") from None
    if manifest["kind"] != kind:
        raise ValueError(f"--{kind}-index {path}: a {manifest['kind']} index, not {kind}")
    if manifest["corpus_sha256"] != sha256_file(corpus):
        raise ValueError(f"--{kind}-index {path}: built from another corpus than {corpus}")
    logger.info("using prebuilt %s index %s", kind, path)
    return path


async def run_queries(
    pipeline: SearchPipeline,
    variant: Variant,
    queries: Sequence[Query],
    *,
    top_k: int = EVAL_TOP_K,
    concurrency: int = 8,
) -> dict[str, list[str]]:
    """Each query's ranked doc ids, several queries in flight; the pipeline is the gateway's own."""
    gate = asyncio.Semaphore(concurrency)
    depth = max(variant.retrieval_depth, top_k)
    rerank_depth = variant.rerank_depth if variant.reranks else 0

    async def one(query: Query) -> tuple[str, list[str]]:
        async with gate:
            outcome = await pipeline.search(SearchQuery(query.text, top_k, variant, depth, rerank_depth))
        if outcome.coverage.degraded:
            logger.warning("query %s degraded: %s", query.query_id, outcome.coverage.degradations)
        return query.query_id, [hit.document.doc_id for hit in outcome.hits]

    return dict(await asyncio.gather(*(one(q) for q in queries)))


def score_run(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, RR@10 and R@100 over every judged query (a query absent from the run scores zero).

    The run is scored by rank (score = -rank), so ir_measures evaluates exactly the pipeline's order.
    """
    qrel_rows = [ir_measures.Qrel(q, d, rel) for q, docs in qrels.items() for d, rel in docs.items()]
    run_rows = [
        ir_measures.ScoredDoc(q, doc_id, float(-rank))
        for q, ranked in run.items()
        for rank, doc_id in enumerate(ranked, start=1)
    ]
    per_query: dict[str, dict[str, float]] = {name: {} for name in MEASURES}
    names = {str(measure): name for name, measure in MEASURES.items()}
    for metric in ir_measures.iter_calc(list(MEASURES.values()), qrel_rows, run_rows):
        per_query[names[str(metric.measure)]][metric.query_id] = float(metric.value)
    return {name: sum(values.get(q, 0.0) for q in qrels) / len(qrels) for name, values in per_query.items()}


def load_offline_retrievers(
    beir: BeirDataset,
    groups: set[str],
    *,
    index_root: Path,
    num_shards: int,
    prebuilt: Mapping[str, Path] | None,
    encoder_dir: Path | None = None,
    encoder: BiEncoder | None = None,
) -> dict[str, Sequence[Retriever]]:
    """In-process retrievers for the groups named: a prebuilt index, or one built (and cached) for the corpus.

    The dense group embeds with `encoder`, or the one loaded from `encoder_dir` (None: the packaged
    bi-encoder); the index cache key holds the encoder's identity, so each encoder gets its own index and a
    shard built with another one is refused.
    """
    from retriever_service.bootstrap import load_index

    retrievers: dict[str, Sequence[Retriever]] = {}
    if "dense" in groups:
        from retriever_service.encoder import BiEncoder

        encoder = encoder or BiEncoder.load(encoder_dir)
        dense_dir = prebuilt_index(prebuilt, "dense", beir.corpus_path) or ensure_index(
            beir.corpus_path,
            index_root,
            kind="dense",
            num_shards=num_shards,
            encoder=encoder,
            dataset_name=beir.name,
        )
        retrievers["dense"] = load_index(dense_dir, encoder=encoder)
    if "bm25" in groups:
        bm25_dir = prebuilt_index(prebuilt, "bm25", beir.corpus_path) or ensure_index(
            beir.corpus_path, index_root, kind="bm25", dataset_name=beir.name
        )
        retrievers["bm25"] = load_index(bm25_dir)
    return retrievers


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

    Raises:
        DatasetError, ValueError: a bad dataset, or a variant that is unknown or needs a missing reranker.
    """

    beir = BeirDataset(dataset)
    table = load_variants(variants_path, VariantBounds())
    variants = [table.get(name) for name in pipelines]
    for variant in variants:
        if variant.reranks and reranker is None:
            raise ValueError(f"pipeline {variant.name!r} needs a reranker; pass --reranker")
    queries, qrels = beir.split_queries(split)
    if max_queries is not None:
        queries = queries[:max_queries]
        qrels = {q.query_id: qrels[q.query_id] for q in queries}
    groups_needed = {group for v in variants for group in v.groups}
    encoder = None
    if "dense" in groups_needed:
        from retriever_service.encoder import BiEncoder

        encoder = BiEncoder.load(encoder_dir)
    retrievers = load_offline_retrievers(
        beir, groups_needed, index_root=index_root, num_shards=num_shards, prebuilt=prebuilt, encoder=encoder
    )
    # Feedback variants refine a vector the pipeline embeds itself, with the dense shards' own encoder.
    query_encoder = encoder if any(v.uses_feedback for v in variants) else None
    pipeline = SearchPipeline(retrievers, reranker, query_encoder=query_encoder)
    rows: list[QualityRow] = []
    for variant in variants:
        started = time.monotonic()
        run = asyncio.run(run_queries(pipeline, variant, queries, concurrency=concurrency))
        scores = score_run(run, qrels)
        row = QualityRow(
            dataset=beir.name,
            split=split,
            pipeline=labelled_pipeline(variant.name, encoder_label if "dense" in variant.groups else None),
            ndcg_at_10=round(scores["ndcg@10"], 4),
            mrr_at_10=round(scores["mrr@10"], 4),
            recall_at_100=round(scores["recall@100"], 4),
            queries=len(queries),
        )
        logger.info("%s in %.1fs: %s", variant.name, time.monotonic() - started, asdict(row))
        rows.append(row)
    return rows


def update_results(results_dir: Path, rows: Sequence[QualityRow]) -> tuple[Path, Path]:
    """Merges rows into quality.json (same dataset/split/pipeline replaced) and regenerates quality.md."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / "quality.json"
    existing: list[dict[str, Any]] = []
    if json_path.is_file():
        loaded = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(loaded, list):
            raise ValueError(f"{json_path}: expected a JSON list of rows")
        existing = loaded
    fresh = [row.to_json() for row in rows]
    keys = {(r["dataset"], r["split"], r["pipeline"]) for r in fresh}
    merged = [r for r in existing if (r.get("dataset"), r.get("split"), r.get("pipeline")) not in keys]
    merged.extend(fresh)
    merged.sort(key=lambda r: (str(r.get("dataset")), str(r.get("split")), str(r.get("pipeline"))))
    scratch = json_path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    scratch.replace(json_path)
    md_path = results_dir / "quality.md"
    md_path.write_text(render_markdown(merged), encoding="utf-8")
    return json_path, md_path


def render_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "# Retrieval quality",
        "",
        "Generated by `search-eval` from quality.json; do not edit by hand.",
        "",
        "| dataset | split | pipeline | nDCG@10 | MRR@10 | Recall@100 | queries |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('dataset')} | {r.get('split')} | {r.get('pipeline')} "
            f"| {float(r.get('ndcg@10', 0)):.4f} | {float(r.get('mrr@10', 0)):.4f} "
            f"| {float(r.get('recall@100', 0)):.4f} | {r.get('queries')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_eval_settings(argv, ["none", *sorted(RERANKER_FACTORIES)])
    configure_logging(settings.log_level)
    reranker: Reranker | None = None
    try:
        if settings.reranker != "none":
            reranker = RERANKER_FACTORIES[settings.reranker](settings.reranker_artifact)
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
