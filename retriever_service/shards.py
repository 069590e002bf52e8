"""What dense and BM25 shards share: artifact layout, shard assignment, document store, request checks.

Layout of an index version directory (written atomically by `build_index`):

    <out>/manifest.json          index level: format_version, kind, name, version, num_shards,
                                 num_documents, corpus_sha256, built_at
                                 (+ dense: factory, search_params, metric, dim, encoder {id, checksum})
    <out>/shard-<i>/manifest.json  shard level: kind, shard_id, num_shards, name, version, num_documents,
                                 files {relative name: sha256} (+ dense: dim, metric, factory, search_params,
                                 encoder)
    <out>/shard-<i>/docs.jsonl   the shard's documents in index-row order: {"_id", "title", "text"}
    <out>/shard-<i>/index.faiss  (dense) or bm25/ (BM25, bm25s's own files)

Shard assignment follows FAISS's `(nshards, shard_id)` convention (contrib/datasets.py `database_iterator`):
shard i holds the contiguous corpus rows `[n*i // nshards, n*(i+1) // nshards)` in corpus file order, so row r
of shard i is corpus document `n*i // nshards + r`.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from search_common.artifacts import ArtifactError, read_manifest, verify_checksums
from search_common.documents import Candidate, Document, QueryEmbedding, RetrievalResult, ShardDescription
from search_common.errors import DeadlineExceeded, InvalidArgument

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_QUERY_LIMIT = 2048
DEFAULT_MAX_TOP_K = 1000
DOCS_FILE = "docs.jsonl"
SHARD_REQUIRED = (
    "format_version",
    "kind",
    "shard_id",
    "num_shards",
    "name",
    "version",
    "num_documents",
    "files",
)
INDEX_REQUIRED = (
    "format_version",
    "kind",
    "name",
    "version",
    "num_shards",
    "num_documents",
    "corpus_sha256",
    "built_at",
)


def shard_dir_name(shard_id: int) -> str:
    return f"shard-{shard_id}"


def shard_bounds(num_documents: int, num_shards: int, shard_id: int) -> tuple[int, int]:
    """Corpus rows [start, end) of one shard, as FAISS splits a database into (nshards, shard_id)."""
    if num_shards <= 0:
        raise ValueError(f"num_shards must be positive, got {num_shards}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in 0..{num_shards - 1}, got {shard_id}")
    return num_documents * shard_id // num_shards, num_documents * (shard_id + 1) // num_shards


def write_docs(path: Path, documents: Sequence[Document]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for doc in documents:
            handle.write(
                json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}, ensure_ascii=False)
            )
            handle.write("\n")


def read_docs(path: Path) -> list[Document]:
    docs: list[Document] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                    docs.append(Document(str(record["_id"]), str(record["title"]), str(record["text"])))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ArtifactError(f"{path}:{line_no}: corrupt document store line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable document store ({exc})") from None
    return docs


def load_shard_manifest(shard_dir: Path, kind: str, extra_required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Reads and checks a shard manifest and its file checksums; ArtifactError on any problem."""
    if not shard_dir.is_dir():
        raise ArtifactError(f"{shard_dir}: shard directory not found")
    manifest = read_manifest(shard_dir, required=SHARD_REQUIRED + extra_required)
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            f"{shard_dir}: unsupported format_version {manifest['format_version']!r} "
            f"(expected {FORMAT_VERSION})"
        )
    if manifest["kind"] != kind:
        raise ArtifactError(f"{shard_dir}: a {manifest['kind']!r} shard, not {kind!r}")
    files = manifest["files"]
    if not isinstance(files, dict) or DOCS_FILE not in files:
        raise ArtifactError(f"{shard_dir}: manifest 'files' must list {DOCS_FILE} and the index files")
    for key in ("shard_id", "num_shards", "num_documents"):
        if not isinstance(manifest[key], int) or isinstance(manifest[key], bool) or manifest[key] < 0:
            raise ArtifactError(f"{shard_dir}: manifest {key} must be a non-negative integer")
    if not manifest["shard_id"] < manifest["num_shards"]:
        raise ArtifactError(
            f"{shard_dir}: shard_id {manifest['shard_id']} >= num_shards {manifest['num_shards']}"
        )
    verify_checksums(shard_dir, files)
    return manifest


def load_shard_docs(shard_dir: Path, manifest: dict[str, Any]) -> list[Document]:
    docs = read_docs(shard_dir / DOCS_FILE)
    if len(docs) != manifest["num_documents"]:
        raise ArtifactError(
            f"{shard_dir}: {DOCS_FILE} holds {len(docs)} documents, manifest says {manifest['num_documents']}"
        )
    return docs


def validate_request(query: str, k: int, *, max_top_k: int, max_query_chars: int) -> str:
    """Checks a retrieval request; returns the stripped query, or raises InvalidArgument saying why."""
    if not isinstance(query, str):
        raise InvalidArgument("query must be a string")
    stripped = query.strip()
    if not stripped:
        raise InvalidArgument("query is empty or whitespace only")
    if len(query) > max_query_chars:
        raise InvalidArgument(f"query is {len(query)} characters long; the limit is {max_query_chars}")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise InvalidArgument(f"top_k must be a positive integer, got {k}")
    if k > max_top_k:
        raise InvalidArgument(f"top_k {k} exceeds this server's maximum of {max_top_k}")
    return stripped


EncodedQuery = TypeVar("EncodedQuery")


class ShardRetriever(abc.ABC, Generic[EncodedQuery]):
    """What a dense and a BM25 shard share: request checks, timings, running off the event loop.

    A subclass says how a query is encoded (a vector, a token list) and how encoded queries are searched;
    this class implements the `search_common.ports.Retriever` protocol on top.
    """

    def __init__(
        self,
        documents: list[Document],
        shard: ShardDescription,
        *,
        max_top_k: int = DEFAULT_MAX_TOP_K,
        max_query_chars: int = DEFAULT_QUERY_LIMIT,
    ) -> None:
        self._documents = documents
        self._shard = shard
        self._max_top_k = max_top_k
        self._max_query_chars = max_query_chars

    @property
    def component(self) -> str:
        return self._shard.component

    @property
    def shard(self) -> ShardDescription:
        return self._shard

    @property
    def shard_count(self) -> int:
        return 1

    async def describe(self, timeout: float | None = None) -> ShardDescription:
        return self._shard

    async def describe_all(self, timeout: float | None = None) -> tuple[ShardDescription, ...]:
        return (self._shard,)

    def validate(self, query: str, k: int) -> str:
        """The stripped query, if the request is within this shard's limits; InvalidArgument otherwise."""
        return validate_request(query, k, max_top_k=self._max_top_k, max_query_chars=self._max_query_chars)

    @abc.abstractmethod
    def encode(self, text: str) -> EncodedQuery:
        """The query in the form `search` takes (blocking)."""

    def from_embedding(self, embedding: QueryEmbedding) -> EncodedQuery | None:
        """The caller's query embedding in the form `search` takes, or None to embed the text instead.

        Checks it (cheap, non-blocking). A BM25 shard has no use for a vector: None.
        """
        return None

    @abc.abstractmethod
    def search(self, encoded: EncodedQuery, k: int, with_vectors: bool = False) -> list[Candidate]:
        """Top-k candidates of one encoded query, best first (blocking). With `with_vectors` a dense shard
        attaches each document's stored vector; a lexical shard has none and ignores it."""

    def search_sync(self, query: str, k: int, embedding: QueryEmbedding | None = None) -> RetrievalResult:
        """Blocking encode + search; `retrieve` runs the same off the event loop."""
        text = self.validate(query, k)
        given = None if embedding is None else self.from_embedding(embedding)
        return self._search_text(text, k, given)

    def _search_text(
        self, text: str, k: int, given: EncodedQuery | None, want_vectors: bool = False
    ) -> RetrievalResult:
        timings: dict[str, float] = {}
        if given is None:
            started = time.perf_counter()
            given = self.encode(text)
            timings["embed"] = time.perf_counter() - started  # absent when the caller embedded
        searched = time.perf_counter()
        candidates = self.search(given, k, want_vectors)
        timings["search"] = time.perf_counter() - searched
        return RetrievalResult(candidates=candidates, shard=self._shard, timings=timings)

    async def retrieve(
        self,
        query: str,
        k: int,
        timeout: float | None = None,
        *,
        embedding: QueryEmbedding | None = None,
        with_vectors: bool = False,
    ) -> RetrievalResult:
        return await retrieve_off_loop(
            self, self._search_text, self.component, query, k, timeout, embedding, with_vectors
        )

    async def close(self) -> None:
        return None


async def retrieve_off_loop(
    checker: ShardRetriever[EncodedQuery],
    search: Callable[[str, int, EncodedQuery | None, bool], RetrievalResult],
    component: str,
    query: str,
    k: int,
    timeout: float | None,
    embedding: QueryEmbedding | None,
    with_vectors: bool,
) -> RetrievalResult:
    """Checks the request with `checker`'s limits on the event loop, so that bad input never costs a thread,
    then runs `search(text, k, encoded or None, with_vectors)` in a worker thread within `timeout`."""
    text = checker.validate(query, k)
    given = None if embedding is None else checker.from_embedding(embedding)
    try:
        return await asyncio.wait_for(asyncio.to_thread(search, text, k, given, with_vectors), timeout)
    except TimeoutError:
        raise DeadlineExceeded(f"{component}: retrieval exceeded {timeout:.3f}s") from None
