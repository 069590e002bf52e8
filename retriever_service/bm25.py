"""Lexical shards: BM25 through bm25s, behind the same Retriever port as the dense shards.

Tokenizer (the same for documents and queries, recorded in the manifest and checked at load): bm25s's
`tokenize` with lowercasing, the token pattern `(?u)\\b\\w\\w+\\b` (words of two or more characters), bm25s's
English stopword list, and the Snowball English stemmer from PyStemmer.

Scoring: Lucene's BM25 variant with k1=1.2, b=0.75 (`BM25_PARAMS`), chosen on a seeded 20% dev split of the
SciFact train queries (161 queries, nDCG@10): k1=1.2/b=0.75 0.747, bm25s's default k1=1.5/b=0.75 0.745,
Anserini's k1=0.9/b=0.4 0.735. The differences are small; the test split was not used for the choice.

BM25 indexes have exactly one shard: IDF has to be computed over the whole corpus, and a per-shard IDF would
make scores from different shards incomparable when the gateway merges them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

from retriever_service.shards import (
    DEFAULT_MAX_TOP_K,
    DEFAULT_QUERY_LIMIT,
    ShardRetriever,
    load_shard_docs,
    load_shard_manifest,
)
from search_common.artifacts import ArtifactError
from search_common.documents import Candidate, Document, ShardDescription

logger = logging.getLogger(__name__)

BM25_DIR = "bm25"
BM25_PARAMS: dict[str, Any] = {"method": "lucene", "k1": 1.2, "b": 0.75}
TOKENIZER: dict[str, Any] = {
    "lower": True,
    "stopwords": "en",
    "stemmer": "english",
    "token_pattern": r"(?u)\b\w\w+\b",
}
BM25_REQUIRED = ("tokenizer", "bm25")


class Bm25Tokenizer:
    """The documented tokenizer; `config` is what the manifest records."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(TOKENIZER if config is None else config)
        if self.config != TOKENIZER:
            raise ArtifactError(
                f"unsupported BM25 tokenizer settings {self.config}; this build knows {TOKENIZER}"
            )
        self._stemmer = Stemmer.Stemmer(self.config["stemmer"])

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        tokens = bm25s.tokenize(
            list(texts),
            lower=self.config["lower"],
            token_pattern=self.config["token_pattern"],
            stopwords=self.config["stopwords"],
            stemmer=self._stemmer.stemWords,
            return_ids=False,
            show_progress=False,
        )
        return [list(t) for t in tokens]


def build_bm25(documents: Sequence[Document], out_dir: Path) -> dict[str, Any]:
    """Indexes documents' `model_text()` into out_dir/bm25; returns the manifest's tokenizer/bm25 fields."""
    tokenizer = Bm25Tokenizer()
    model = bm25s.BM25(**BM25_PARAMS)
    model.index(tokenizer([d.model_text() for d in documents]), show_progress=False)
    model.save(str(out_dir / BM25_DIR), show_progress=False)
    return {"tokenizer": tokenizer.config, "bm25": dict(BM25_PARAMS)}


class Bm25Retriever(ShardRetriever[list[list[str]]]):
    """One BM25 index in process; scoring runs in a worker thread."""

    def __init__(
        self,
        model: bm25s.BM25,
        tokenizer: Bm25Tokenizer,
        documents: list[Document],
        shard: ShardDescription,
        *,
        max_top_k: int = DEFAULT_MAX_TOP_K,
        max_query_chars: int = DEFAULT_QUERY_LIMIT,
    ) -> None:
        super().__init__(documents, shard, max_top_k=max_top_k, max_query_chars=max_query_chars)
        self._model = model
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[list[str]]:
        return self._tokenizer([text])

    def search(self, encoded: list[list[str]], k: int, with_vectors: bool = False) -> list[Candidate]:
        return self.search_tokens(encoded, k)[0]  # no vectors to attach

    def search_tokens(self, tokens: list[list[str]], k: int) -> list[list[Candidate]]:
        """Top-k per tokenized query, best first; documents sharing no term with the query are left out."""
        k_eff = min(k, len(self._documents))
        if k_eff == 0:
            return [[] for _ in tokens]
        ids, scores = self._model.retrieve(tokens, k=k_eff, show_progress=False, n_threads=1)
        return [
            [Candidate(self._documents[int(i)], float(s)) for i, s in zip(row_i, row_s, strict=True) if s > 0]
            for row_i, row_s in zip(np.asarray(ids), np.asarray(scores), strict=True)
        ]


def load_bm25_shard(
    shard_dir: Path, *, max_top_k: int = DEFAULT_MAX_TOP_K, max_query_chars: int = DEFAULT_QUERY_LIMIT
) -> Bm25Retriever:
    """Loads and validates a BM25 shard; ArtifactError names what is wrong."""
    manifest = load_shard_manifest(shard_dir, "bm25", BM25_REQUIRED)
    try:
        tokenizer = Bm25Tokenizer(manifest["tokenizer"])
    except ArtifactError as exc:
        raise ArtifactError(f"{shard_dir}: {exc}") from None
    try:
        model = bm25s.BM25.load(str(shard_dir / BM25_DIR), show_progress=False, verbosity=0)
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{shard_dir}: unreadable BM25 index ({type(exc).__name__})") from None
    documents = load_shard_docs(shard_dir, manifest)
    indexed = int(model.scores["num_docs"])
    if indexed != len(documents):
        raise ArtifactError(f"{shard_dir}: BM25 index holds {indexed} documents, docs store {len(documents)}")
    shard = ShardDescription(
        kind="bm25",
        shard_id=manifest["shard_id"],
        num_shards=manifest["num_shards"],
        index_name=str(manifest["name"]),
        index_version=str(manifest["version"]),
        num_documents=manifest["num_documents"],
    )
    logger.info("loaded %s: %s, %d documents", shard.component, manifest["name"], len(documents))
    return Bm25Retriever(
        model, tokenizer, documents, shard, max_top_k=max_top_k, max_query_chars=max_query_chars
    )
