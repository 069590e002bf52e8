"""The retriever groups the gateway searches in its own process (`--index`): no gRPC hop, no extra process.

The shards load as a retriever process would load them (`retriever_service.bootstrap.load_retrievers`):
several shards of a kind are searched in parallel threads and merged exactly, and every answer still names
each shard it covers, so coverage and index versions are reported as for remote shards. A dense index shares
one bi-encoder with the gateway's query encoder, which then embeds each query once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config import Settings
from search_common.ports import Retriever

if TYPE_CHECKING:
    from model_runtimes.bi_encoder import BiEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalRetrievers:
    """Group ("dense", "bm25") -> its in-process retriever; the dense index's encoder (None without one)."""

    groups: Mapping[str, Sequence[Retriever]]
    encoder: BiEncoder | None


def load_local_retrievers(settings: Settings) -> LocalRetrievers:
    """Loads every index `--index` names (blocking: call it off the event loop).

    A dense index's shards use `--query-encoder`'s bi-encoder, or the packaged all-MiniLM-L6-v2 without
    one; a shard built with other weights is refused, as a retriever started without --encoder refuses it.

    Raises:
        search_common.artifacts.ArtifactError: a directory is not a loadable index or shard, or the shards
            of one kind are not of one index version.
        ValueError: a kind is searched here and also given addresses (--dense/--bm25).
    """
    if not settings.indexes:
        return LocalRetrievers({}, None)
    from retriever_service.bootstrap import index_kinds, load_retrievers

    kinds = index_kinds(settings.indexes)
    remote = sorted(kinds & {group for group, addresses in settings.retrievers.items() if addresses})
    if remote:
        raise ValueError(
            f"{', '.join(remote)}: searched here (--index) and also given addresses (--{remote[0]}); "
            "give one or the other"
        )
    encoder = _dense_encoder(settings) if "dense" in kinds else None
    loaded = load_retrievers(
        settings.indexes,
        encoder=encoder,
        max_top_k=settings.max_retrieval_depth,
        max_query_chars=settings.max_query_chars,
    )
    for kind, retriever in loaded.items():
        logger.info("%s: searched in this process (%s)", kind, retriever.component)
    return LocalRetrievers({kind: [retriever] for kind, retriever in loaded.items()}, encoder)


def _dense_encoder(settings: Settings) -> BiEncoder:
    import faiss
    import torch

    from model_runtimes.bi_encoder import BiEncoder
    from retriever_service.config import available_cores

    threads = available_cores()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    directory = settings.query_encoder if settings.query_encoder != "packaged" else None
    return BiEncoder.load(directory)
