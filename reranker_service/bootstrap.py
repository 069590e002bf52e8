"""The composition root: the only place a scorer and a score cache are chosen from Settings.

Backends are imported lazily, so a Triton-only image needs no onnxruntime and an embedded one no
tritonclient. What `--backend auto` means is decided by the runtime (`cross_encoder_runtime.choose_engine`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from reranker_service.config import STORED_VECTOR_BACKENDS, BackendKind, Settings
from reranker_service.metrics import RerankerMetrics
from reranker_service.ports import ScoreCache, Scorer
from reranker_service.scoring import RequestLimits, RerankCore
from search_common.ports import Reranker

logger = logging.getLogger(__name__)


def build_scorer(settings: Settings, metrics: RerankerMetrics | None = None) -> Scorer:
    """The configured scorer; `metrics` counts what only a scorer sees (token-store lookups)."""
    if settings.backend == "triton":
        from reranker_service.backends.triton import TritonScorer

        return TritonScorer(
            settings.triton_url,
            settings.triton_model,
            timeout_seconds=settings.triton_timeout_seconds,
            tls=settings.triton_tls,
            max_pending=settings.max_pending,
        )
    from reranker_service.backends.embedded import EmbeddedScorer

    assert settings.artifact_dir is not None  # Settings checks it for the in-process backends
    if settings.backend in STORED_VECTOR_BACKENDS:
        from reranker_service.backends.embedded import load_stored_vector_scorer

        return load_stored_vector_scorer(
            settings.backend,
            settings.artifact_dir,
            token_store=settings.token_store,
            device=settings.device,
            threads=settings.threads,
            intra_op_threads=settings.intra_op_threads,
            batch_size=settings.batch_size,
            max_pending=settings.max_pending,
            on_lookups=metrics.record_token_store_lookups if metrics is not None else None,
        )
    return EmbeddedScorer.load(
        settings.artifact_dir,
        engine=settings.backend,  # auto, onnx or torch: the runtime decides what auto means
        device=settings.device,
        threads=settings.threads,
        intra_op_threads=settings.intra_op_threads,
        batch_workers=settings.batch_workers,
        pass_shape=settings.pass_shape,
        batch_size=settings.batch_size,
        max_pending=settings.max_pending,
    )


def build_cache(settings: Settings) -> ScoreCache | None:
    if settings.cache == "redis":
        from reranker_service.cache.redis import RedisScoreCache

        return RedisScoreCache(
            settings.redis_url,
            ttl_seconds=settings.cache_ttl_seconds,
            password=settings.redis_password,
            ca_file=settings.redis_ca_file,
            timeout_seconds=settings.redis_timeout_seconds,
        )
    if settings.cache == "lru":
        from reranker_service.cache.lru import LruScoreCache

        return LruScoreCache(settings.lru_size)
    return None


def build_core(
    settings: Settings,
    *,
    scorer: Scorer | None = None,
    cache: ScoreCache | None = None,
    metrics: RerankerMetrics | None = None,
) -> RerankCore:
    """The reranking core from Settings; `scorer` and `cache` override the configured adapters."""
    limits = RequestLimits(
        max_documents=settings.max_documents,
        max_query_chars=settings.max_query_chars,
        max_document_chars=settings.max_document_chars,
    )
    return RerankCore(
        scorer if scorer is not None else build_scorer(settings, metrics),
        cache if cache is not None else build_cache(settings),
        limits,
        metrics,
    )


def build_reranker(settings: Settings) -> Reranker:
    """An in-process `search_common.ports.Reranker` (the scoring core), for the gateway's embedded use."""
    return build_core(settings)


def build_local_reranker(
    artifact_dir: Path,
    cache: Literal["lru", "none"] = "lru",
    backend: BackendKind = "onnx",
    token_store: Path | None = None,
) -> Reranker:
    """The embedded reranker over `artifact_dir` (a version or a root) with an LRU cache; ONNX Runtime unless
    `backend` names another in-process engine (the stored-vector backends read `token_store` when
    given)."""
    return build_reranker(
        Settings(backend=backend, artifact_dir=artifact_dir, cache=cache, token_store=token_store)
    )
