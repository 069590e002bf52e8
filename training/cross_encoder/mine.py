"""First-stage candidates for training and evaluation, from the project's own retrievers, cached as JSON.

Builds (once) a dense and a BM25 index of the corpus with `retriever_service.build_index`, loads them with
`retriever_service.bootstrap.load_index`, and ranks each query by the hybrid the gateway serves: dense top-k
and BM25 top-k fused by `gateway.merge.reciprocal_rank_fusion` (k=60). The cache maps query id to the fused
doc ids, best first; reruns with the same queries read it instead of searching again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gateway.merge import reciprocal_rank_fusion
from search_common.documents import Candidate, RetrieverKind
from search_common.logging_setup import configure_logging
from search_common.ranking import merge_shards

logger = logging.getLogger(__name__)

KINDS: tuple[RetrieverKind, ...] = ("dense", "bm25")
DEFAULT_DEPTH = 100
CONCURRENCY = 16


def _cache_key(corpus: Path, queries: Mapping[str, str], depth: int) -> str:
    digest = hashlib.sha256()
    digest.update(str(corpus.resolve()).encode())
    digest.update(str(depth).encode())
    for qid in sorted(queries):
        digest.update(f"{qid}\t{queries[qid]}\n".encode())
    return digest.hexdigest()[:16]


def ensure_indexes(corpus: Path, index_root: Path) -> dict[RetrieverKind, Path]:
    """Builds the dense and BM25 indexes under index_root unless present; returns their directories."""
    from retriever_service.build_index import build_index

    paths: dict[RetrieverKind, Path] = {}
    for kind in KINDS:
        out = index_root / kind
        if not out.is_dir():
            logger.info("building %s index of %s -> %s", kind, corpus, out)
            out = build_index(corpus, out, kind=kind)
        paths[kind] = out
    return paths


async def _rank_all(
    index_dirs: Mapping[RetrieverKind, Path], queries: Mapping[str, str], depth: int
) -> dict[str, list[str]]:
    from retriever_service.bootstrap import load_index

    retrievers = {kind: load_index(path) for kind, path in index_dirs.items()}
    semaphore = asyncio.Semaphore(CONCURRENCY)
    progress = tqdm(total=len(queries), desc="first stage", unit="query")

    async def one(text: str) -> list[str]:
        async with semaphore:
            lists: dict[str, list[Candidate]] = {}
            for kind, shards in retrievers.items():
                results = await asyncio.gather(*(r.retrieve(text, depth) for r in shards))
                lists[kind] = merge_shards([res.candidates for res in results], depth)
            progress.update(1)
            return [c.document.doc_id for c in reciprocal_rank_fusion(lists, limit=depth)]

    ids = sorted(queries)
    ranked = await asyncio.gather(*(one(queries[qid]) for qid in ids))
    progress.close()
    for shards in retrievers.values():
        for retriever in shards:
            close = getattr(retriever, "close", None)
            if close is not None:
                await close()
    return dict(zip(ids, ranked, strict=True))


def first_stage_candidates(
    corpus: Path,
    queries: Mapping[str, str],
    *,
    cache_dir: Path,
    index_root: Path,
    depth: int = DEFAULT_DEPTH,
) -> dict[str, list[str]]:
    """Hybrid (dense + BM25, RRF k=60) top-`depth` doc ids per query id, read from or written to the cache."""
    key = _cache_key(corpus, queries, depth)
    path = cache_dir / f"hybrid-{key}.json"
    if path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text())
        logger.info("first-stage candidates from cache %s (%d queries)", path, len(cached["ranked"]))
        return {q: list(v) for q, v in cached["ranked"].items()}
    index_dirs = ensure_indexes(corpus, index_root)
    ranked = asyncio.run(_rank_all(index_dirs, queries, depth))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"corpus": str(corpus), "depth": depth, "ranked": ranked}))
    tmp.replace(path)
    logger.info("cached first-stage candidates for %d queries in %s", len(ranked), path)
    return ranked


def merge_candidate_maps(maps: Sequence[Mapping[str, list[str]]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for mapping in maps:
        merged.update(mapping)
    return merged


DEFAULT_CACHE = Path("var/cache/cross-encoder")
DEFAULT_INDEXES = Path("var/indexes/cross-encoder-mining")


def labelled_queries(dataset: Path) -> dict[str, str]:
    """Every query judged in train or test: train ones feed training, test ones are only evaluated."""
    from corpora.beir import BeirDataset

    data = BeirDataset(dataset)
    queries = data.queries()
    judged = set(data.qrels("train")) | set(data.qrels("test"))
    return {q: queries[q].text for q in sorted(judged)}


def pseudo_queries(dataset: Path) -> dict[str, str]:
    """Every usable title as a pseudo-query, keyed `pq:<doc_id>`."""
    from corpora.beir import BeirDataset
    from training.cross_encoder.data import pseudo_query_ids

    documents = BeirDataset(dataset).corpus()
    by_id = {d.doc_id: d for d in documents}
    ids = pseudo_query_ids(documents, len(documents), seed=0)
    return {pid: by_id[pid.split(":", 1)[1]].title for pid in ids}


@dataclass(frozen=True, slots=True)
class RerankSet:
    """One judged query and its first-stage candidates, as the reranker benchmarks score them."""

    query_id: str
    query: str
    texts: list[str]
    doc_ids: list[str]


def rerank_sets(dataset: Path, *, queries: int, depth: int, split: str = "test") -> list[RerankSet]:
    """The first `queries` judged queries of `split` (by id), each with its cached hybrid top `depth`."""
    from corpora.beir import BeirDataset

    data = BeirDataset(dataset)
    documents = {d.doc_id: d for d in data.corpus()}
    texts = data.queries()
    candidates = first_stage_candidates(
        dataset / "corpus.jsonl",
        labelled_queries(dataset),
        cache_dir=DEFAULT_CACHE,
        index_root=DEFAULT_INDEXES / dataset.name,
    )
    chosen = [q for q in sorted(data.qrels(split)) if q in candidates][:queries]
    return [
        RerankSet(
            q,
            texts[q].text,
            [documents[d].model_text() for d in candidates[q][:depth]],
            candidates[q][:depth],
        )
        for q in chosen
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR dataset folder")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--indexes", type=Path, default=DEFAULT_INDEXES)
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH)
    parser.add_argument("--no-pseudo", action="store_true", help="skip mining the title pseudo-queries")
    args = parser.parse_args(argv)
    configure_logging()
    corpus = args.dataset / "corpus.jsonl"
    root = args.indexes / args.dataset.name
    first_stage_candidates(
        corpus, labelled_queries(args.dataset), cache_dir=args.cache, index_root=root, depth=args.depth
    )
    if not args.no_pseudo:
        first_stage_candidates(
            corpus, pseudo_queries(args.dataset), cache_dir=args.cache, index_root=root, depth=args.depth
        )


if __name__ == "__main__":
    main()
