"""The composition root: chooses and loads the retriever adapter (FAISS or BM25) a shard directory needs.

Adapters are imported only when chosen, so a BM25 server never imports torch, transformers or FAISS.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from retriever_service.config import FaissDevice, Settings
from retriever_service.shards import (
    DEFAULT_MAX_TOP_K,
    DEFAULT_QUERY_LIMIT,
    FORMAT_VERSION,
    INDEX_REQUIRED,
    shard_dir_name,
)
from search_common.artifacts import ArtifactError, read_manifest
from search_common.ports import Retriever

if TYPE_CHECKING:
    from model_runtimes.bi_encoder import BiEncoder
    from retriever_service.bm25 import Bm25Retriever
    from retriever_service.faiss_index import FaissRetriever

logger = logging.getLogger(__name__)


def shard_kind(shard_dir: Path) -> str:
    manifest = read_manifest(shard_dir, required=("kind",))
    kind = manifest["kind"]
    if kind not in ("dense", "bm25"):
        raise ArtifactError(f"{shard_dir}: unknown index kind {kind!r} (expected 'dense' or 'bm25')")
    return str(kind)


def load_shard_retriever(
    shard_dir: Path,
    *,
    encoder: BiEncoder | None = None,
    max_top_k: int = DEFAULT_MAX_TOP_K,
    max_query_chars: int = DEFAULT_QUERY_LIMIT,
    faiss_device: FaissDevice = "auto",
) -> Retriever:
    """Loads one shard as an in-process Retriever, validating it first.

    Args:
        shard_dir: an index version's `shard-<i>/` directory.
        encoder: a loaded encoder to share between shards (dense only); None loads the packaged
            all-MiniLM-L6-v2, and a shard built with other weights is refused.
        max_top_k: the largest k a request may ask for.
        faiss_device: where a dense shard is searched (`auto`: a GPU when FAISS sees one).

    Raises:
        ArtifactError: the shard is missing, incomplete, corrupt, or does not match the encoder, or it
            cannot be placed on the FAISS device asked for.
    """
    return _load_shard(shard_dir, encoder, max_top_k, max_query_chars, faiss_device)


def _load_shard(
    shard_dir: Path,
    encoder: BiEncoder | None,
    max_top_k: int,
    max_query_chars: int,
    faiss_device: FaissDevice = "auto",
) -> FaissRetriever | Bm25Retriever:
    shard_dir = Path(shard_dir)
    if shard_kind(shard_dir) == "bm25":
        from retriever_service.bm25 import load_bm25_shard

        return load_bm25_shard(shard_dir, max_top_k=max_top_k, max_query_chars=max_query_chars)
    from model_runtimes.bi_encoder import BiEncoder
    from retriever_service.faiss_index import load_faiss_shard

    return load_faiss_shard(
        shard_dir,
        encoder or BiEncoder.load(),
        max_top_k=max_top_k,
        max_query_chars=max_query_chars,
        faiss_device=faiss_device,
    )


def load_index(
    index_dir: Path,
    *,
    encoder: BiEncoder | None = None,
    max_top_k: int = DEFAULT_MAX_TOP_K,
    max_query_chars: int = DEFAULT_QUERY_LIMIT,
    faiss_device: FaissDevice = "auto",
) -> list[Retriever]:
    """Loads every shard of an index version directory, sharing one encoder; shard i is element i."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir, required=INDEX_REQUIRED)
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{index_dir}: unsupported format_version {manifest['format_version']!r}")
    num_shards = manifest["num_shards"]
    if not isinstance(num_shards, int) or num_shards <= 0:
        raise ArtifactError(f"{index_dir}: num_shards must be a positive integer")
    if manifest["kind"] == "dense" and encoder is None:
        from model_runtimes.bi_encoder import BiEncoder

        encoder = BiEncoder.load()
    retrievers: list[Retriever] = []
    total = 0
    for shard_id in range(num_shards):
        shard_dir = index_dir / shard_dir_name(shard_id)
        retriever = _load_shard(shard_dir, encoder, max_top_k, max_query_chars, faiss_device)
        shard = retriever.shard
        if (shard.shard_id, shard.num_shards, shard.index_version, shard.kind) != (
            shard_id,
            num_shards,
            manifest["version"],
            manifest["kind"],
        ):
            raise ArtifactError(
                f"{shard_dir}: shard {shard.shard_id}/{shard.num_shards} of {shard.kind} version "
                f"{shard.index_version} does not belong to {index_dir} "
                f"({manifest['kind']} {manifest['version']}, {num_shards} shards)"
            )
        total += shard.num_documents
        retrievers.append(retriever)
    if total != manifest["num_documents"]:
        raise ArtifactError(
            f"{index_dir}: shards hold {total} documents, manifest says {manifest['num_documents']}"
        )
    return retrievers


def build_retriever(settings: Settings) -> Retriever:
    """What the server serves: the shard named by --index, with the encoder named by --encoder."""
    if shard_kind(settings.index) == "bm25":
        from retriever_service.bm25 import load_bm25_shard

        return load_bm25_shard(
            settings.index, max_top_k=settings.max_top_k, max_query_chars=settings.max_query_chars
        )
    import faiss
    import torch

    from model_runtimes.bi_encoder import BiEncoder

    torch.set_num_threads(settings.effective_threads)
    faiss.omp_set_num_threads(settings.effective_threads)
    encoder = BiEncoder.load(settings.encoder, device=settings.device)
    return load_shard_retriever(
        settings.index,
        encoder=encoder,
        max_top_k=settings.max_top_k,
        max_query_chars=settings.max_query_chars,
        faiss_device=settings.faiss_device,
    )
