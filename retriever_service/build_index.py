"""`search-build-index`: a BEIR corpus.jsonl -> one index version directory (dense FAISS or BM25), N shards.

With `--kind late-interaction` (or `poly-encoder`, `bi-encoder`) it writes, per shard, the token store that
reranker reads (`model_runtimes.token_store`): every document's ColBERT token vectors (or its one
poly-encoder or re-scoring bi-encoder vector), encoded once here instead of at every request.

Example:
    search-build-index --corpus ../shared/data/scifact/corpus.jsonl --out var/indexes/scifact-dense/v1 \\
        --kind dense --shards 2 --factory HNSW32,Flat --search-params efSearch=128
    search-build-index --corpus ../shared/data/scifact/corpus.jsonl --out var/indexes/scifact-colbert/v1 \\
        --kind late-interaction --encoder var/models/colbert
    search-build-index --corpus ../shared/data/scifact/corpus.jsonl --out var/indexes/scifact-poly/v1 \\
        --kind poly-encoder --encoder var/models/poly-encoder
    search-build-index --corpus ../shared/data/scifact/corpus.jsonl --out var/indexes/scifact-mpnet/v1 \\
        --kind bi-encoder --encoder "$(search-packaged-model all-mpnet-base-v2)"

The whole version directory is written under a temporary name and renamed into place when complete (see
`search_common.artifacts.atomic_directory`); the layout and shard assignment are described in `shards.py`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from model_runtimes.bi_encoder import BiEncoder
from model_runtimes.stored_vectors import DocumentVectorModel
from model_runtimes.token_store import write_token_store
from retriever_service.bm25 import BM25_DIR, build_bm25
from retriever_service.config import INDEX_KINDS, BuildSettings, IndexKind, parse_build_settings
from retriever_service.faiss_index import (
    INDEX_FILE,
    METRIC,
    apply_search_params,
    build_faiss_index,
    make_index,
)
from retriever_service.shards import DOCS_FILE, FORMAT_VERSION, shard_bounds, shard_dir_name, write_docs
from search_common.artifacts import ArtifactError, atomic_directory, new_version, sha256_file, write_manifest
from search_common.corpus_file import DatasetError, load_corpus
from search_common.documents import Document
from search_common.logging_setup import configure_logging
from search_common.model_kinds import STORED_VECTOR_KINDS

logger = logging.getLogger(__name__)


class BuildError(ValueError):
    """The build cannot proceed with these inputs; the message says which and why."""


def build_index(
    corpus: Path,
    out: Path,
    *,
    kind: IndexKind,
    num_shards: int = 1,
    factory: str = "Flat",
    search_params: str = "",
    name: str | None = None,
    batch_size: int = 64,
    encoder: BiEncoder | None = None,
    vector_model: DocumentVectorModel | None = None,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Builds an index version directory at `out` and returns its path.

    Args:
        corpus: a BEIR corpus.jsonl, or the dataset folder holding it.
        out: the version directory to create (refused if it exists, unless overwrite).
        kind: "dense" (FAISS over the bi-encoder), "bm25" (one shard only), or a stored-vector kind
            ("late-interaction", "poly-encoder", "bi-encoder": token stores for that reranker).
        num_shards: shards to split the corpus into, FAISS's (nshards, shard_id) convention.
        factory: FAISS factory string (dense), e.g. "Flat", "IVF256,Flat", "HNSW32,Flat".
        search_params: FAISS ParameterSpace string applied at load, e.g. "nprobe=16".
        name: index name; defaults to the corpus folder's name.
        batch_size: documents per encoder batch.
        encoder: a loaded encoder to reuse; None loads the packaged all-MiniLM-L6-v2.
        vector_model: the reranker's model (the token-store kinds only, required there).
        on_progress: told (documents encoded, total) after each batch of a token-store build, instead of
            a progress bar on stderr (a caller that reports progress its own way).

    Raises:
        DatasetError: the corpus is missing or malformed (names file and line).
        BuildError: bad options (shards, factory, parameters, IVF lists larger than a shard, empty corpus).
        ArtifactError: `out` exists and overwrite is false.
    """
    if kind not in INDEX_KINDS:
        raise BuildError(f"kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind in STORED_VECTOR_KINDS and vector_model is None:
        raise BuildError(f"a {kind} build needs the {kind} model (--encoder)")
    if num_shards <= 0:
        raise BuildError(f"num_shards must be positive, got {num_shards}")
    if kind == "bm25" and num_shards != 1:
        raise BuildError(
            "BM25 indexes have exactly one shard: IDF must be global for scores to be comparable; "
            f"got num_shards={num_shards}"
        )
    if batch_size <= 0:
        raise BuildError(f"batch_size must be positive, got {batch_size}")
    corpus_path = corpus / "corpus.jsonl" if corpus.is_dir() else corpus
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    if kind == "dense":
        encoder = encoder or BiEncoder.load()
        _check_dense_options(encoder.dim, factory, search_params)
    documents = load_corpus(corpus_path)
    if not documents:
        raise BuildError(f"{corpus_path}: the corpus holds no documents")
    if len(documents) < num_shards:
        raise BuildError(f"cannot split {len(documents)} documents into {num_shards} non-empty shards")
    index_name = name or corpus_path.parent.name
    version = new_version()
    common: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": index_name,
        "version": version,
        "num_shards": num_shards,
    }
    started = time.perf_counter()
    with atomic_directory(out, overwrite=overwrite) as scratch:
        if kind == "dense":
            assert encoder is not None
            extra: dict[str, Any] = _build_dense(
                documents, scratch, common, factory, search_params, batch_size, encoder
            )
        elif kind in STORED_VECTOR_KINDS:
            assert vector_model is not None
            extra = _build_token_stores(documents, scratch, common, batch_size, vector_model, on_progress)
        else:
            extra = _build_bm25(documents, scratch, common)
        write_manifest(
            scratch,
            {
                **common,
                **extra,
                "num_documents": len(documents),
                "corpus_sha256": sha256_file(corpus_path),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.perf_counter() - started, 3),
            },
        )
    logger.info(
        "built %s index %s %s (%d documents, %d shards) at %s",
        kind,
        index_name,
        version,
        len(documents),
        num_shards,
        out,
    )
    return out


def _check_dense_options(dim: int, factory: str, search_params: str) -> None:
    try:
        probe = make_index(dim, factory)
        apply_search_params(probe, search_params)
    except ValueError as exc:
        raise BuildError(str(exc)) from None


def _build_dense(
    documents: list[Document],
    scratch: Path,
    common: dict[str, Any],
    factory: str,
    search_params: str,
    batch_size: int,
    encoder: BiEncoder,
) -> dict[str, Any]:
    started = time.perf_counter()
    vectors = encoder.encode_documents(
        [d.model_text() for d in documents], batch_size=batch_size, show_progress=True
    )
    elapsed = time.perf_counter() - started
    logger.info(
        "embedded %d documents in %.1fs (%.1f docs/s)",
        len(documents),
        elapsed,
        len(documents) / max(elapsed, 1e-9),
    )
    encoder_record = {"id": encoder.identity, "checksum": encoder.checksum}
    dense = {
        "factory": factory,
        "search_params": search_params,
        "metric": METRIC,
        "dim": encoder.dim,
        "encoder": encoder_record,
    }
    for shard_id in range(common["num_shards"]):
        start, end = shard_bounds(len(documents), common["num_shards"], shard_id)
        shard_dir = scratch / shard_dir_name(shard_id)
        shard_dir.mkdir()
        try:
            index = build_faiss_index(np.ascontiguousarray(vectors[start:end]), factory)
        except ValueError as exc:
            raise BuildError(f"shard {shard_id}: {exc}") from None
        faiss.write_index(index, str(shard_dir / INDEX_FILE))
        write_docs(shard_dir / DOCS_FILE, documents[start:end])
        _write_shard_manifest(shard_dir, common, shard_id, end - start, [INDEX_FILE, DOCS_FILE], dense)
    return dense


def _build_bm25(documents: list[Document], scratch: Path, common: dict[str, Any]) -> dict[str, Any]:
    shard_dir = scratch / shard_dir_name(0)
    shard_dir.mkdir()
    extra = build_bm25(documents, shard_dir)
    write_docs(shard_dir / DOCS_FILE, documents)
    files = [str(p.relative_to(shard_dir)) for p in sorted((shard_dir / BM25_DIR).rglob("*")) if p.is_file()]
    _write_shard_manifest(shard_dir, common, 0, len(documents), [*files, DOCS_FILE], extra)
    return extra


def _build_token_stores(
    documents: list[Document],
    scratch: Path,
    common: dict[str, Any],
    batch_size: int,
    model: DocumentVectorModel,
    on_progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    from tqdm import tqdm

    identity = model.identity
    done = 0
    bar = tqdm(total=len(documents), desc="token vectors", unit="doc", disable=on_progress is not None)
    with bar as progress:
        for shard_id in range(common["num_shards"]):
            start, end = shard_bounds(len(documents), common["num_shards"], shard_id)
            texts = [d.model_text() for d in documents[start:end]]
            vectors = []
            for first in range(0, len(texts), batch_size):
                vectors += model.encode_documents(texts[first : first + batch_size])
                progress.update(min(batch_size, len(texts) - first))
                done += min(batch_size, len(texts) - first)
                if on_progress is not None:
                    on_progress(done, len(documents))
            write_token_store(
                scratch / shard_dir_name(shard_id),
                texts,
                vectors,
                model=identity,
                document_length=model.document_length,
                extra={**common, "shard_id": shard_id, "document_engine": model.document_engine},
            )
    return {
        "model": identity,
        "document_length": model.document_length,
        "document_engine": model.document_engine,
    }


def _load_vector_model(settings: BuildSettings) -> DocumentVectorModel | None:
    """The reranker model a token-store kind is built with; None for the retriever kinds."""
    if settings.kind not in STORED_VECTOR_KINDS or settings.encoder is None:
        return None
    from model_runtimes.stored_vector_loading import load_document_vector_model

    return load_document_vector_model(
        settings.kind,
        settings.encoder,
        document_engine=settings.document_engine,
        threads=settings.effective_threads,
    )


def _write_shard_manifest(
    shard_dir: Path,
    common: dict[str, Any],
    shard_id: int,
    count: int,
    files: Sequence[str],
    extra: dict[str, Any],
) -> None:
    write_manifest(
        shard_dir,
        {
            **common,
            **extra,
            "shard_id": shard_id,
            "num_documents": count,
            "files": {name: sha256_file(shard_dir / name) for name in files},
        },
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: exits 0 on success, 2 with a one-line message on bad input."""
    settings: BuildSettings = parse_build_settings(argv)
    configure_logging(settings.log_level)
    import torch

    torch.set_num_threads(settings.effective_threads)
    faiss.omp_set_num_threads(settings.effective_threads)
    try:
        encoder = (
            BiEncoder.load(settings.encoder, max_length=settings.max_length)
            if settings.kind == "dense"
            else None
        )
        vector_model = _load_vector_model(settings)
        out = build_index(
            settings.corpus,
            settings.out,
            kind=settings.kind,
            num_shards=settings.num_shards,
            factory=settings.factory,
            search_params=settings.search_params,
            name=settings.name,
            batch_size=settings.batch_size,
            encoder=encoder,
            vector_model=vector_model,
            overwrite=settings.overwrite,
        )
    except (DatasetError, BuildError, ArtifactError) as exc:
        sys.stderr.write(f"search-build-index: error: {exc}\n")
        return 2
    logger.info("index written to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
