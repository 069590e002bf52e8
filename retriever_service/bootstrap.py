"""The composition root: chooses and loads the retriever adapter (FAISS or BM25) each shard directory needs,
and groups several shards of a kind served by one process.

Adapters are imported only when chosen, so a BM25 server never imports torch, transformers or FAISS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


def build_retrievers(settings: Settings) -> list[Retriever]:
    """What the server serves: every shard the `--index` paths name, one retriever per kind
    (`load_retrievers`); every dense shard shares the encoder named by --encoder.

    Raises:
        ArtifactError: a shard does not load, or the shards of one kind are not of one index version.
    """
    encoder: BiEncoder | None = None
    if "dense" in index_kinds(settings.indexes):
        import faiss
        import torch

        from model_runtimes.bi_encoder import BiEncoder

        torch.set_num_threads(settings.effective_threads)
        faiss.omp_set_num_threads(settings.effective_threads)
        encoder = BiEncoder.load(settings.encoder, device=settings.device)
    by_kind = load_retrievers(
        settings.indexes,
        encoder=encoder,
        max_top_k=settings.max_top_k,
        max_query_chars=settings.max_query_chars,
        faiss_device=settings.faiss_device,
    )
    return list(by_kind.values())


def index_kinds(paths: Sequence[Path]) -> set[str]:
    """The kinds ("dense", "bm25") of the shards `paths` name (shard or index version directories).

    Raises:
        ArtifactError: a path is not a shard or an index version directory.
    """
    return {shard_kind(d) for path in paths for d in _shard_dirs(Path(path))}


def load_retrievers(
    paths: Sequence[Path],
    *,
    encoder: BiEncoder | None,
    max_top_k: int = DEFAULT_MAX_TOP_K,
    max_query_chars: int = DEFAULT_QUERY_LIMIT,
    faiss_device: FaissDevice = "auto",
) -> dict[str, Retriever]:
    """Every shard `paths` name (a shard directory, or an index version directory for all its shards), as
    one in-process retriever per kind: several shards of a kind are searched together (`ShardGroup`).

    Raises:
        ArtifactError: a shard does not load, or the shards of one kind are not of one index version.
    """
    shard_dirs = [d for path in paths for d in _shard_dirs(Path(path))]
    by_kind: dict[str, list[FaissRetriever | Bm25Retriever]] = {}
    for shard_dir in shard_dirs:
        loaded = _load_shard(shard_dir, encoder, max_top_k, max_query_chars, faiss_device)
        by_kind.setdefault(shard_kind(shard_dir), []).append(loaded)
    retrievers: dict[str, Retriever] = {}
    for kind, shards in by_kind.items():
        if len(shards) == 1:
            retrievers[kind] = shards[0]
            continue
        from retriever_service.shard_group import ShardGroup

        try:
            retrievers[kind] = ShardGroup(shards)
        except ValueError as exc:
            raise ArtifactError(str(exc)) from None
    return retrievers


def _shard_dirs(path: Path) -> list[Path]:
    """The shard directories a `--index` path names: itself, or every shard of an index version."""
    if (path / shard_dir_name(0)).is_dir():
        manifest = read_manifest(path, required=INDEX_REQUIRED)
        return [path / shard_dir_name(i) for i in range(int(manifest["num_shards"]))]
    return [path]
