"""The reranking core: validation, score-cache read-through, scoring the misses, write-back.

`RerankCore` implements `search_common.ports.Reranker` in-process: the gRPC servicer delegates to it, and the
gateway's evaluation and embedded demo call it directly (see `bootstrap.build_local_reranker`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from reranker_service.metrics import RerankerMetrics
from reranker_service.ports import ScoreCache, Scorer
from search_common.documents import Document, RerankResult
from search_common.errors import DeadlineExceeded, InvalidArgument, NotFound
from search_common.variant_label import NO_VARIANT, current_variant

logger = logging.getLogger(__name__)

KEY_PREFIX = "rr1"
MIN_SEQUENCE_LENGTH = 8


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def cache_key(
    model_name: str,
    model_version: str,
    engine: str,
    max_length: int,
    query_hash: str,
    doc_id: str,
    text: str,
) -> str:
    """Key of one (query, document) score.

    Model name and version are part of it, so a new model version never reads the old one's scores; so is
    the engine, because int8 ONNX and bfloat16 torch give the same pair scores a few tenths of a logit
    apart; the document text's hash is part of it, so an edited document under the same id is scored
    again; the token budget is part of it, because truncation changes the score.
    """
    model = f"{model_name}:{model_version}:{engine}"
    return f"{KEY_PREFIX}:{model}:{max_length}:{query_hash}:{doc_id}:{_digest(text)}"


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_documents: int = 256
    max_query_chars: int = 2_000
    max_document_chars: int = 20_000


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    # Lookups and writes the cache adapter bypassed because the cache failed.
    errors: int = 0


class RerankCore:
    """Scores documents against a query through a score cache.

    Args:
        scorer: the cross-encoder adapter.
        cache: a score cache, or None to always score.
        limits: request bounds; requests outside them raise InvalidArgument.
        metrics: Prometheus metrics to update, or None.
    """

    def __init__(
        self,
        scorer: Scorer,
        cache: ScoreCache | None,
        limits: RequestLimits | None = None,
        metrics: RerankerMetrics | None = None,
    ) -> None:
        self._scorer = scorer
        self._cache = cache
        self._limits = limits or RequestLimits()
        self._metrics = metrics
        self._stats = CacheStats()
        self._bypasses_seen = 0

    @property
    def scorer(self) -> Scorer:
        return self._scorer

    def swap_scorer(self, scorer: Scorer) -> Scorer:
        """Serves a new (already started and warmed) scorer from the next request on; returns the old one.

        Requests already running keep the scorer they started with. Cache keys carry the model version,
        so scores of the old version are never served as the new one's.
        """
        old, self._scorer = self._scorer, scorer
        return old

    def cache_stats(self) -> CacheStats:
        errors = self._cache.errors if self._cache is not None else 0
        return CacheStats(self._stats.hits, self._stats.misses, errors)

    async def start(self) -> None:
        """Connects the scorer (learning model name and version); every rerank awaits it first.

        `Scorer.start` is idempotent and cheap once started; a remote scorer uses it to notice a new model
        version, so the cache keys built right after it name the version that will answer.
        """
        await self._scorer.start()

    def _validate(
        self, query: str, documents: Sequence[Document], model: str, max_sequence_length: int
    ) -> int:
        limits = self._limits
        if not query.strip():
            raise InvalidArgument("query must not be empty")
        if len(query) > limits.max_query_chars:
            raise InvalidArgument(f"query has {len(query)} characters; the limit is {limits.max_query_chars}")
        if not documents:
            raise InvalidArgument("documents must not be empty: send at least one document to score")
        if len(documents) > limits.max_documents:
            raise InvalidArgument(
                f"{len(documents)} documents in one request; the limit is {limits.max_documents}"
            )
        for index, document in enumerate(documents):
            if not document.text.strip() and not document.title.strip():
                raise InvalidArgument(f"documents[{index}] has neither title nor text")
            if len(document.title) + len(document.text) > limits.max_document_chars:
                raise InvalidArgument(
                    f"documents[{index}] has {len(document.title) + len(document.text)} characters; "
                    f"the limit is {limits.max_document_chars}"
                )
        # `model` is "name" or "name@version" (a variant pinned to a version); empty = what is served.
        name, _, version = model.partition("@")
        if name and name != self._scorer.model_name:
            raise NotFound(f"unknown model {name!r}; this reranker serves {self._scorer.model_name!r}")
        if version and version != self._scorer.model_version:
            raise NotFound(
                f"model {self._scorer.model_name!r} version {version!r} is not served here; "
                f"this reranker serves version {self._scorer.model_version!r}"
            )
        model_max = self._scorer.max_length
        if max_sequence_length == 0:
            return model_max
        if not MIN_SEQUENCE_LENGTH <= max_sequence_length <= model_max:
            raise InvalidArgument(
                f"max_sequence_length must be 0 (model default) or between {MIN_SEQUENCE_LENGTH} and "
                f"{model_max}, got {max_sequence_length}"
            )
        return max_sequence_length

    async def rerank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        model: str = "",
        max_sequence_length: int = 0,
        use_cache: bool = True,
        timeout: float | None = None,
    ) -> RerankResult:
        """Scores each document against the query, in input order.

        Raises:
            InvalidArgument: empty query or document list, too many or too long inputs, bad max length.
            NotFound: a model name this reranker does not serve.
            DeadlineExceeded: `timeout` seconds passed first.
            Unavailable / ResourceExhausted: from the scorer.
        """
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("reranker: no time left for the request")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                return await self._rerank(query, documents, model, max_sequence_length, use_cache)
        except TimeoutError:
            self._observe("inference", "deadline", time.perf_counter() - started)
            raise DeadlineExceeded(f"reranker: not done within {timeout:.3f}s") from None

    async def _rerank(
        self, query: str, documents: Sequence[Document], model: str, max_sequence_length: int, use_cache: bool
    ) -> RerankResult:
        await self.start()
        max_length = self._validate(query, documents, model, max_sequence_length)
        scorer = self._scorer
        texts = [document.model_text() for document in documents]
        scores: list[float | None] = [None] * len(documents)
        cache = self._cache if use_cache else None
        keys: list[str] = []
        cache_seconds = 0.0
        lookup_failed = False
        errors_before = cache.errors if cache is not None else 0
        if cache is not None:
            query_hash = _digest(query)
            keys = [
                cache_key(
                    scorer.model_name,
                    scorer.model_version,
                    scorer.engine,
                    max_length,
                    query_hash,
                    d.doc_id,
                    t,
                )
                for d, t in zip(documents, texts, strict=True)
            ]
            started = time.perf_counter()
            scores = await cache.get_many(keys)
            cache_seconds += time.perf_counter() - started
            lookup_failed = cache.errors > errors_before
            self._observe("cache_lookup", "error" if lookup_failed else "ok", cache_seconds)
        misses = [i for i, score in enumerate(scores) if score is None]
        hits = len(documents) - len(misses)
        if cache is not None:
            self._stats.hits += hits
            self._stats.misses += len(misses)
        inference_seconds = 0.0
        if misses:
            started = time.perf_counter()
            try:
                fresh = await scorer.score(query, [texts[i] for i in misses], max_length)
            except Exception:
                self._observe("inference", "error", time.perf_counter() - started)
                raise
            inference_seconds = time.perf_counter() - started
            self._observe("inference", "ok", inference_seconds)
            for index, value in zip(misses, fresh.tolist(), strict=True):
                scores[index] = float(value)
            if cache is not None:
                started = time.perf_counter()
                await cache.put_many({keys[i]: float(fresh[j]) for j, i in enumerate(misses)})
                cache_seconds += time.perf_counter() - started
        self._record(cache, hits, len(misses), lookup_failed)
        return RerankResult(
            scores=[float(s) for s in scores if s is not None],
            model_name=scorer.model_name,
            model_version=scorer.model_version,
            cache_hits=hits,
            timings={"cache": cache_seconds, "inference": inference_seconds},
            cache_bypassed=cache is not None and cache.errors > errors_before,
        )

    def _observe(self, stage: str, status: str, seconds: float) -> None:
        """One stage sample, labelled with the variant the caller named (see search_common.variant_label)."""
        if self._metrics is not None:
            variant = current_variant() or NO_VARIANT
            self._metrics.stage_duration.labels(stage=stage, variant=variant, status=status).observe(seconds)

    def _record(self, cache: ScoreCache | None, hits: int, misses: int, lookup_failed: bool) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        if cache is not None:
            if lookup_failed:  # the adapter answered every key as a miss because the cache failed
                metrics.cache_lookups.labels(result="error").inc(hits + misses)
            else:
                metrics.cache_lookups.labels(result="hit").inc(hits)
                metrics.cache_lookups.labels(result="miss").inc(misses)
            bypasses = cache.errors
            if bypasses > self._bypasses_seen:
                metrics.cache_bypasses.inc(bypasses - self._bypasses_seen)
                self._bypasses_seen = bypasses
        if misses:
            metrics.batch_pairs.observe(misses)

    async def close(self) -> None:
        """Closes the cache, then the scorer (reverse of construction)."""
        if self._cache is not None:
            await self._cache.close()
        await self._scorer.close()
