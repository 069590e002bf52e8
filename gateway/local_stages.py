"""The stages the gateway runs in its own process: no gRPC hop to them, no process of their own.

Retriever groups (`--index`) load as a retriever process would load them
(`retriever_service.bootstrap.load_retrievers`): several shards of a kind are searched in parallel threads and
merged exactly, and every answer still names each shard it covers, so coverage and index versions are
reported as for remote shards. A dense index shares one bi-encoder with the gateway's query encoder, which
then embeds each query once. The reranker (`--local-reranker`) is the reranker service's own core
(`reranker_service.bootstrap.build_core`): the same scorer, score cache and request limits, minus the port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config import Settings
from search_common.errors import Unavailable
from search_common.ports import Retriever

if TYPE_CHECKING:
    from model_runtimes.bi_encoder import BiEncoder
    from reranker_service.scoring import RerankCore

logger = logging.getLogger(__name__)

RERANKER_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class LocalStages:
    """Group ("dense", "bm25") -> its in-process retriever; the dense index's encoder (None without one);
    the in-process reranker (None without one)."""

    groups: Mapping[str, Sequence[Retriever]]
    encoder: BiEncoder | None = None
    reranker: RerankCore | None = None


def load_local_stages(settings: Settings) -> LocalStages:
    """Loads every index `--index` names and the `--local-reranker` (blocking: call it off the event loop).

    A dense index's shards use `--query-encoder`'s bi-encoder, or the packaged all-MiniLM-L6-v2 without
    one; a shard built with other weights is refused, as a retriever started without --encoder refuses it.

    Raises:
        search_common.artifacts.ArtifactError: a directory is not a loadable index, shard or model, or the
            shards of one kind are not of one index version.
        ValueError: a kind is searched here and also given addresses (--dense/--bm25).
    """
    groups: dict[str, list[Retriever]] = {}
    encoder = None
    if settings.indexes:
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
            groups[kind] = [retriever]
    return LocalStages(groups, encoder, _reranker(settings))


async def start_local_reranker(reranker: RerankCore, timeout_seconds: float) -> None:
    """Connects the reranker's scorer (a tritonserver may still be loading its model: retried until
    `timeout_seconds`), so the first request does not pay for it.

    Raises:
        Unavailable: the scorer did not become ready in time.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            await reranker.start()
        except Unavailable as exc:
            if time.monotonic() >= deadline:
                raise
            logger.warning("reranker scorer not ready yet (%s); retrying", exc)
            await asyncio.sleep(RERANKER_RETRY_SECONDS)
            continue
        scorer = reranker.scorer
        logger.info("reranker %s@%s runs in this process", scorer.model_name, scorer.model_version)
        return


def _reranker(settings: Settings) -> RerankCore | None:
    if settings.local_reranker is None:
        return None
    from prometheus_client import REGISTRY

    from reranker_service.bootstrap import build_core
    from reranker_service.metrics import RerankerMetrics

    # Its search_reranker_* series go out on the gateway's /metrics, beside the gateway's own.
    metrics = RerankerMetrics(REGISTRY if settings.metrics_port is not None else None)
    return build_core(settings.local_reranker, metrics=metrics)


def _dense_encoder(settings: Settings) -> BiEncoder:
    import faiss

    from model_runtimes.bi_encoder import BiEncoder
    from retriever_service.config import available_cores

    # torch's threads are the query encoder's: bootstrap.load_query_encoder sets them for this encoder.
    faiss.omp_set_num_threads(available_cores())
    directory = settings.query_encoder if settings.query_encoder != "packaged" else None
    return BiEncoder.load(directory)
