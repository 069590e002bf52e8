"""Negatives for the pseudo-queries: the masked corpus ranked by the project's own BM25, groups of one
positive and negatives drawn from ranks (skip_top, neg_depth]."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from search_common.documents import Document
from training.cross_encoder.default_model.pseudo_queries import PseudoQuery
from training.cross_encoder.default_model.recipe import CORPUS_FILE, DefaultModelError, Recipe

logger = logging.getLogger(__name__)


def write_corpus(path: Path, documents: Mapping[str, Document]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for doc in documents.values():
            record = {"_id": doc.doc_id, "title": doc.title, "text": doc.text}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def rank_bm25(
    documents: Mapping[str, Document],
    queries: Sequence[PseudoQuery],
    work: Path,
    *,
    depth: int,
    progress: bool,
) -> dict[str, list[str]]:
    """The project's BM25 (build_index + load_index) over `documents`, top-`depth` ids per query id."""
    from retriever_service.bm25 import Bm25Retriever
    from retriever_service.bootstrap import load_index
    from retriever_service.build_index import build_index

    corpus = work / "masked" / CORPUS_FILE
    write_corpus(corpus, documents)
    # Named for what it is: the corpus being adapted to, its pseudo-queries' sentences masked.
    index_dir = build_index(corpus, work / "bm25", kind="bm25", name="masked-corpus", overwrite=True)
    (retriever,) = load_index(index_dir)
    if not isinstance(retriever, Bm25Retriever):
        raise DefaultModelError(f"{index_dir}: expected a BM25 index")
    ranked: dict[str, list[str]] = {}
    for query in tqdm(queries, desc="mining (BM25)", unit="query", disable=not progress, mininterval=2):
        result = retriever.search_sync(query.text, depth)
        ranked[query.query_id] = [c.document.doc_id for c in result.candidates]
    return ranked


def make_groups(
    queries: Sequence[PseudoQuery],
    ranked: Mapping[str, Sequence[str]],
    *,
    recipe: Recipe,
    exclude_docs: frozenset[str],
) -> list[Any]:
    """Training groups (`training.cross_encoder.data.Group`); name queries see documents without titles."""
    from training.cross_encoder.data import Group, sample_negatives

    rng = random.Random(recipe.seed + 1)
    groups: list[Group] = []
    for query in queries:
        pool = [d for d in ranked.get(query.query_id, ()) if d not in exclude_docs]
        negatives = sample_negatives(
            pool,
            [query.doc_id],
            count=recipe.negatives,
            skip_top=recipe.skip_top,
            depth=recipe.neg_depth,
            rng=rng,
        )
        if len(negatives) == recipe.negatives:
            groups.append(
                Group(query.query_id, query.text, query.doc_id, tuple(negatives), query.kind == "name")
            )
    return groups
