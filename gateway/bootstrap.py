"""The gateway's composition root: the only place adapters are chosen from Settings.

Production wiring opens one gRPC channel per configured retriever address and one to the reranker, and
runs the groups `--index` names and the `--local-reranker` in process (`gateway.local_stages`); evaluation and
tests pass their own adapters (in-process shards or reranker) through the same function.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.clients import GrpcReranker, GrpcRetriever
from gateway.config import Settings
from gateway.learned_fusion import LearnedFusion, load_learned_fusion
from gateway.local_stages import LocalStages, load_local_stages
from gateway.overload import AnswerMargin, RerankAdmission
from gateway.pipeline import SearchPipeline
from gateway.reranker_routing import RoutedReranker, served_models
from gateway.servicer import RequestLimits
from gateway.variant_reload import LiveVariants
from gateway.variants import VariantTable, load_variants
from search_common.artifacts import ArtifactError
from search_common.documents import ShardDescription
from search_common.errors import SearchError, Unavailable
from search_common.ports import QueryEncoder, Reranker, Retriever

if TYPE_CHECKING:
    from model_runtimes.bi_encoder import BiEncoder

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0
PROBE_INTERVAL_SECONDS = 0.25
WARMUP_QUERY = "warm up the query encoder"


@dataclass
class Gateway:
    """What the server runs: the pipeline, the variants it can serve, and the adapters to close at the end."""

    pipeline: SearchPipeline
    live_variants: LiveVariants
    limits: RequestLimits
    retrievers: Mapping[str, Sequence[Retriever]]
    reranker: Reranker | None

    @property
    def variants(self) -> VariantTable:
        """The variants served right now (the variants file may be reloaded while the gateway runs)."""
        return self.live_variants.current

    async def close(self) -> None:
        for shards in self.retrievers.values():
            for shard in shards:
                await shard.close()
        if self.reranker is not None:
            await self.reranker.close()


def bootstrap(
    settings: Settings,
    *,
    retrievers: Mapping[str, Sequence[Retriever]] | None = None,
    reranker: Reranker | None = None,
    query_encoder: QueryEncoder | None = None,
    local: LocalStages | None = None,
) -> Gateway:
    """Builds the gateway from Settings; `retrievers`/`reranker` replace the gRPC adapters when given.

    `query_encoder` and `local` are what `load_models(settings)` returned (loading is slow, so the caller
    does it off the event loop), or what a test already holds; `local`'s groups are searched in process
    beside the configured addresses, and its reranker stands for `--reranker`'s (routes still apply). A None
    query encoder embeds nothing at the gateway.

    Raises:
        gateway.variants.VariantError: the variants file is invalid or nothing in it can be served here.
    """
    # Variants first: a bad file fails before any channel is opened.
    local_groups = {} if local is None else local.groups
    local_reranker = None if local is None else local.reranker
    configured = [*settings.retrievers.items(), *local_groups.items()]
    groups = {g for g, shards in (retrievers.items() if retrievers else configured) if shards}
    routed = reranker is None and bool(settings.reranker_routes)
    default_reranker = settings.reranker is not None or local_reranker is not None
    has_reranker = reranker is not None or default_reranker or routed
    reranker_models = served_models(settings.reranker_routes, default_reranker) if routed else None
    fusion_models = load_fusion_models(settings.fusion_models)
    fitted_for = {name: model.fit for name, model in fusion_models.items()}
    variants = load_variants(settings.variants, settings.variant_bounds).restricted_to(
        groups,
        has_reranker,
        has_query_encoder=query_encoder is not None,
        fusion_models=fitted_for,
        reranker_models=reranker_models,
    )
    if retrievers is None:
        retrievers = {
            **{
                group: [
                    GrpcRetriever(group, i, address, settings.downstream_tls)
                    for i, address in enumerate(addresses)
                ]
                for group, addresses in settings.retrievers.items()
            },
            **local_groups,
        }
    if reranker is None:
        reranker = local_reranker
    if reranker is None and settings.reranker is not None:
        reranker = GrpcReranker(settings.reranker, settings.downstream_tls)
    if routed:
        routes = {
            model: GrpcReranker(address, settings.downstream_tls)
            for model, address in settings.reranker_routes.items()
        }
        reranker = RoutedReranker(routes, default=reranker)
    pipeline = SearchPipeline(
        retrievers,
        reranker,
        deadline_margin=settings.deadline_margin_seconds,
        answer_margin=AnswerMargin(settings.deadline_margin_seconds, settings.deadline_margin_cap_seconds),
        rerank_admission=RerankAdmission(settings.max_reranks_in_flight) if settings.shed_reranks else None,
        rerank_share=settings.rerank_share,
        snippet_chars=settings.snippet_chars,
        retrieve_timeout=settings.retrieve_timeout_seconds,
        rerank_timeout=settings.rerank_timeout_seconds,
        query_encoder=query_encoder,
        fusion_models=fusion_models,
    )
    limits = RequestLimits(
        max_top_k=settings.max_top_k,
        max_query_chars=settings.max_query_chars,
        max_retrieval_depth=settings.max_retrieval_depth,
        max_rerank_depth=settings.max_rerank_depth,
    )
    live = LiveVariants(
        variants,
        settings.variants,
        settings.variant_bounds,
        groups,
        has_reranker,
        has_query_encoder=query_encoder is not None,
        fusion_models=fitted_for,
        reranker_models=reranker_models,
    )
    return Gateway(pipeline, live, limits, retrievers, reranker)


def load_fusion_models(directories: Sequence[Path]) -> dict[str, LearnedFusion]:
    """The learned-fusion artifacts `--fusion-model` names, by manifest name.

    Raises:
        search_common.artifacts.ArtifactError: a directory is not a loadable learned-fusion artifact, or two
            of them carry the same name.
    """
    models: dict[str, LearnedFusion] = {}
    for directory in directories:
        model = load_learned_fusion(directory)
        if model.name in models:
            raise ArtifactError(f"{directory}: a second fusion model named {model.name!r}")
        models[model.name] = model
        logger.info(
            "fusion model %s@%s: for the %s first stage, fitted at rerank depth %d",
            model.name,
            model.version,
            model.first_stage,
            model.rerank_depth,
        )
    return models


def load_models(settings: Settings) -> tuple[QueryEncoder | None, LocalStages]:
    """The query encoder and the stages run in process (blocking: call it off the event loop).

    A dense index searched here embeds each query once at the gateway, with its own encoder, even without
    `--query-encoder`.

    Raises:
        search_common.artifacts.ArtifactError: an encoder or index directory does not load.
        ValueError: a group is searched here and also given addresses.
    """
    local = load_local_stages(settings)
    return load_query_encoder(settings, local.encoder), local


def load_query_encoder(settings: Settings, encoder: BiEncoder | None = None) -> QueryEncoder | None:
    """The encoder `--query-encoder` names (or `encoder`, already loaded), on the engine
    `--query-encoder-engine` picks, warmed up (blocking); None when neither is set.

    Imported only when configured, so a gateway without one never loads torch.

    Raises:
        search_common.artifacts.ArtifactError: the directory is not a loadable bi-encoder.
    """
    if settings.query_encoder is None and encoder is None:
        return None
    import torch

    from model_runtimes.bi_encoder import BiEncoder
    from model_runtimes.query_encoder_onnx import query_encoder
    from retriever_service.config import available_cores

    torch.set_num_threads(settings.query_encoder_threads or available_cores())
    if encoder is None:
        encoder = BiEncoder.load(None if settings.query_encoder == "packaged" else settings.query_encoder)
    engine = query_encoder(encoder, settings.query_encoder_engine, threads=settings.query_encoder_threads)
    engine.encode_queries([WARMUP_QUERY])  # the first call pays one-off setup; not a request's
    logger.info("query encoder %s: queries are embedded once here", engine.identity)
    return engine


async def wait_until_ready(
    retrievers: Mapping[str, Sequence[Retriever]], timeout: float, query_encoder: str | None = None
) -> None:
    """Polls the retrievers' shard lists until every group has at least one address answering.

    An address may serve one shard or several (one process for many shards); the addresses of a group
    together must cover each shard of its index once. With `query_encoder` (the gateway's encoder identity),
    a dense shard reporting another encoder is logged: it will refuse the gateway's query vectors and be
    asked again by text, which is slower.

    Raises:
        Unavailable: a group had no answering address within `timeout` seconds.
        ValueError: the addresses' shards overlap, or (all answering) leave a shard of the index out.
    """
    deadline = time.monotonic() + timeout
    pending = {group for group, shards in retrievers.items() if shards}
    while True:
        for group in sorted(pending):
            addresses = retrievers[group]
            answers = await asyncio.gather(
                *(a.describe_all(timeout=PROBE_TIMEOUT_SECONDS) for a in addresses), return_exceptions=True
            )
            for answer in answers:
                if isinstance(answer, BaseException) and not isinstance(answer, SearchError):
                    raise answer
            described = [s for a in answers if not isinstance(a, BaseException) for s in a]
            if not described:
                continue
            answered_all = not any(isinstance(a, BaseException) for a in answers)
            check_coverage(group, described, all_answered=answered_all)
            for shard in described:
                if query_encoder is not None and shard.kind == "dense" and shard.encoder != query_encoder:
                    logger.warning(
                        "%s uses encoder %s, the gateway's query encoder is %s: its queries go by text",
                        shard.component,
                        shard.encoder,
                        query_encoder,
                    )
            if len({(d.index_name, d.index_version) for d in described}) > 1:
                logger.warning("%s shards serve different index versions: %s", group, described)
            logger.info(
                "%s ready: %d/%d shards answering from %d address(es)",
                group, len(described), described[0].num_shards, len(addresses),
            )  # fmt: skip
            pending.discard(group)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise Unavailable(f"no shard of {', '.join(sorted(pending))} answered within {timeout:.0f}s")
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)


def check_coverage(group: str, described: Sequence[ShardDescription], *, all_answered: bool) -> None:
    """A group's addresses serve each shard of one index once; with every address answering, all of them.

    Raises:
        ValueError: shards claim different shard counts, a shard is served twice, or one is missing.
    """
    counts = {s.num_shards for s in described}
    if len(counts) > 1:
        raise ValueError(f"{group}: the configured addresses serve indexes of {sorted(counts)} shards")
    ids = sorted(s.shard_id for s in described)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{group}: a shard is served by two configured addresses (shard ids {ids})")
    expected = list(range(counts.pop()))
    if all_answered and ids != expected:
        missing = sorted(set(expected) - set(ids))
        raise ValueError(
            f"{group}: the configured addresses serve shards {ids} of an index of {len(expected)} shards; "
            f"none serves {missing}"
        )
