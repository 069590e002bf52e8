"""THE search pipeline: fan-out to every shard, exact merge, optional fusion, rerank, all under one deadline.

The gRPC servicer, the evaluation command, the demo and the benchmarks all call `SearchPipeline.search`; none
of them re-implements fan-out, merge or rerank. The pipeline sees first-stage retrievers and the reranker
only through `search_common.ports`, so it runs over gRPC clients and over in-process adapters alike.

Query embedding: given a query encoder, the pipeline embeds each query once (off the event loop, timed as the
gateway stage "embed") and sends the vector to the dense shards, which then skip their own embedding. The
lexical shards are asked at once, while the query is embedded; the embed counts against each dense shard's
retrieval budget. A shard built with another encoder answers FailedPrecondition; that shard's call is resent
once with the text only and counted in `SearchOutcome.embedding_fallbacks`, so a misconfigured encoder costs
time, never hits.

Failure policy: a shard that fails or misses its deadline is left out and recorded as a degradation; only
when every shard fails does the search fail (Unavailable). A reranker that fails or misses its share of the
deadline leaves the first-stage order in place, flagged degraded; one the reranker would not answer in time is
not sent at all (shed, flagged `overloaded`: `gateway.overload`). Each deadline keeps a margin, learned from
the gateway's own answering cost, to answer with what it has. A response never has fewer hits than the first
stage found (up to top_k), and no score threshold ever drops a hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gateway.learned_fusion import LearnedFusion, fusion_features
from gateway.merge import (
    RankedCandidate,
    first_stage_order,
    reciprocal_rank_fusion,
    rerank_order,
    snippet,
)
from gateway.overload import AnswerMargin, RerankAdmission
from gateway.prf import rocchio
from gateway.reranker_routing import model_name
from gateway.variants import Variant
from search_common.documents import Candidate, Document, QueryEmbedding, RerankResult, RetrievalResult
from search_common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    SearchError,
    Unavailable,
)
from search_common.ports import QueryEncoder, Reranker, Retriever
from search_common.ranking import merge_shards
from search_common.variant_label import serving_variant

logger = logging.getLogger(__name__)

StageName = Literal["retrieve", "rerank"]
Reason = Literal["deadline_exceeded", "unavailable", "error", "cache_bypassed", "overloaded"]
# The reranker's score cache, named in a cache_bypassed degradation (the reranker itself answered).
SCORE_CACHE_COMPONENT = "score-cache"
RERANKER_COMPONENT = "reranker"
# The learned-fusion model, named in stage timings and response versions.
FUSION_COMPONENT = "fusion"
# The retriever group whose shards search by query vector (gateway.config.GROUPS).
DENSE_GROUP = "dense"


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated request: the pipeline trusts these values (the servicer checked them)."""

    text: str
    top_k: int
    variant: Variant
    retrieval_depth: int
    rerank_depth: int


@dataclass(frozen=True, slots=True)
class Hit:
    document: Document
    snippet: str
    score: float
    retrieval_score: float
    rerank_score: float | None
    rank: int


@dataclass(frozen=True, slots=True)
class StageTime:
    stage: str
    seconds: float
    component: str = ""


@dataclass(frozen=True, slots=True)
class Version:
    component: str
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class Degradation:
    stage: StageName
    reason: Reason
    component: str
    detail: str


@dataclass(frozen=True, slots=True)
class Coverage:
    shards_queried: int
    shards_answered: int
    degradations: tuple[Degradation, ...] = ()

    @property
    def degraded(self) -> bool:
        return bool(self.degradations)


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    hits: list[Hit]
    variant: str
    versions: list[Version]
    timings: list[StageTime]
    coverage: Coverage
    # Candidates the reranker scored (0 when the variant does not rerank or the reranker failed).
    reranked: int = 0
    # Dense shards that refused the gateway's query embedding (another encoder) and were asked again by text.
    embedding_fallbacks: int = 0


@dataclass(slots=True)
class _Trace:
    timings: list[StageTime] = field(default_factory=list)
    versions: list[Version] = field(default_factory=list)
    degradations: list[Degradation] = field(default_factory=list)
    reranked: int = 0
    embedding_fallbacks: int = 0


@dataclass(frozen=True, slots=True)
class _ShardAnswer:
    result: RetrievalResult | None
    error: BaseException | None
    seconds: float
    fell_back: bool = False


def _reason(exc: BaseException) -> Reason:
    if isinstance(exc, DeadlineExceeded | TimeoutError):
        return "deadline_exceeded"
    if isinstance(exc, ResourceExhausted):
        return "overloaded"
    if isinstance(exc, Unavailable):
        return "unavailable"
    return "error"


def _detail(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "deadline exceeded"
    if isinstance(exc, SearchError):
        return str(exc)
    return type(exc).__name__


class SearchPipeline:
    """Fan-out → merge (→ RRF for hybrid) → rerank, over the retriever groups and reranker it is given.

    Args:
        retrievers: group name ("dense", "bm25") → that group's shards.
        reranker: the second stage, or None when this deployment has none.
        deadline_margin: seconds kept back from each downstream timeout for the gateway's own work; with
            `answer_margin`, its floor.
        rerank_share: fraction of the remaining budget given to retrieval is `1 - rerank_share` when the
            request will be reranked; the reranker gets whatever is left after retrieval.
        snippet_chars: length bound of each hit's snippet.
        retrieve_timeout: optional cap, in seconds, on the retrieval stage's budget (each shard call).
        rerank_timeout: optional cap, in seconds, on the rerank stage's budget; a slow reranker then
            degrades the answer early and leaves the rest of the request's budget unused.
        query_encoder: embeds each query once for all dense shards; None lets every dense shard embed it.
        fusion_models: learned-fusion models by name, for variants with `fusion: learned`.
        answer_margin: the margin learned from the gateway's own answering cost (`gateway.overload`);
            None keeps `deadline_margin` fixed.
        rerank_admission: sheds reranks the reranker would not answer in time (`gateway.overload`).
    """

    def __init__(
        self,
        retrievers: Mapping[str, Sequence[Retriever]],
        reranker: Reranker | None = None,
        *,
        deadline_margin: float = 0.02,
        rerank_share: float = 0.5,
        snippet_chars: int = 240,
        retrieve_timeout: float | None = None,
        rerank_timeout: float | None = None,
        query_encoder: QueryEncoder | None = None,
        fusion_models: Mapping[str, LearnedFusion] | None = None,
        answer_margin: AnswerMargin | None = None,
        rerank_admission: RerankAdmission | None = None,
    ) -> None:
        if not any(retrievers.values()):
            raise ValueError("a search pipeline needs at least one retriever")
        if not 0.0 <= rerank_share < 1.0:
            raise ValueError(f"rerank_share must be within [0, 1), got {rerank_share}")
        self._retrievers = {group: list(shards) for group, shards in retrievers.items() if shards}
        self._reranker = reranker
        self._answer_margin = answer_margin or AnswerMargin(deadline_margin, deadline_margin)
        self._admission = rerank_admission
        self._rerank_share = rerank_share
        self._snippet_chars = snippet_chars
        for name, cap in (("retrieve_timeout", retrieve_timeout), ("rerank_timeout", rerank_timeout)):
            if cap is not None and cap <= 0:
                raise ValueError(f"{name} must be positive, got {cap}")
        self._retrieve_cap = retrieve_timeout
        self._rerank_cap = rerank_timeout
        self._query_encoder = query_encoder
        self._fusion_models = dict(fusion_models or {})
        self._warned_fallback: set[str] = set()  # components already logged, so the warning comes once
        self._warned_feedback: set[str] = set()

    @property
    def groups(self) -> list[str]:
        return sorted(self._retrievers)

    @property
    def has_reranker(self) -> bool:
        return self._reranker is not None

    @property
    def query_encoder(self) -> QueryEncoder | None:
        return self._query_encoder

    @property
    def answer_margin(self) -> AnswerMargin:
        return self._answer_margin

    @property
    def rerank_admission(self) -> RerankAdmission | None:
        return self._admission

    async def search(self, query: SearchQuery, deadline: float | None = None) -> SearchOutcome:
        """Runs one query.

        Args:
            query: the validated request.
            deadline: absolute `time.monotonic()` by which the answer is due; None for no deadline.

        Raises:
            Unavailable: no shard of any group the variant uses answered.
            DeadlineExceeded: the budget was spent before retrieval could start, or every shard missed it.
            InvalidArgument: every shard rejected the query.
        """
        with serving_variant(query.variant.name):  # downstream clients tag their calls with it
            return await self._search(query, deadline)

    async def _search(self, query: SearchQuery, deadline: float | None) -> SearchOutcome:
        started = time.monotonic()
        trace = _Trace()
        variant = query.variant
        missing = [g for g in variant.groups if g not in self._retrievers]
        if missing:
            raise InvalidArgument(f"variant {variant.name!r} needs the {' and '.join(missing)} retriever")
        will_rerank = query.rerank_depth > 0 and variant.reranker is not None
        if will_rerank and self._reranker is None:
            raise InvalidArgument(f"variant {variant.name!r} needs a reranker, none configured")
        if variant.fusion_model is not None and variant.fusion_model not in self._fusion_models:
            raise InvalidArgument(
                f"variant {variant.name!r} needs the fusion model {variant.fusion_model!r}, not loaded"
            )
        if variant.uses_feedback and self._query_encoder is None:
            raise InvalidArgument(
                f"variant {variant.name!r} uses pseudo-relevance feedback, which needs the gateway's "
                "query encoder (--query-encoder)"
            )

        retrieve_timeout = self._retrieve_budget(deadline, will_rerank)
        depth = max(query.retrieval_depth, query.top_k)
        shards = [(group, r) for group in variant.groups for r in self._retrievers[group]]
        fanout_started = time.monotonic()
        # Lexical shards are asked at once; only the dense ones wait for the query vector (and, with
        # pseudo-relevance feedback, for the feedback search that refines it).
        embedding: asyncio.Task[QueryEmbedding | None] | None = None
        if self._query_encoder is not None and DENSE_GROUP in variant.groups:
            embedding = asyncio.ensure_future(
                self._embed_with_feedback(query.text, trace, variant, retrieve_timeout)
                if variant.uses_feedback
                else self._embed(query.text, trace)
            )
        try:
            answers = await asyncio.gather(
                *(
                    self._retrieve_one(
                        r, query.text, depth, retrieve_timeout, embedding if group == DENSE_GROUP else None
                    )
                    for group, r in shards
                )
            )
        finally:
            if embedding is not None:
                embedding.cancel()  # a no-op once it is done; stops waiting on it if the request is cancelled
        trace.timings.append(StageTime("fanout", time.monotonic() - fanout_started))
        per_group: dict[str, list[list[Candidate]]] = {group: [] for group in variant.groups}
        failures: list[BaseException] = []
        answered = 0
        for (group, retriever), answer in zip(shards, answers, strict=True):
            trace.timings.append(StageTime("retrieve", answer.seconds, retriever.component))
            trace.embedding_fallbacks += answer.fell_back
            result, error = answer.result, answer.error
            if result is None:
                assert error is not None
                failures.append(error)
                trace.degradations.append(
                    Degradation("retrieve", _reason(error), retriever.component, _detail(error))
                )
                continue
            answered += len(result.covered)
            per_group[group].append(result.candidates)
            trace.versions.extend(
                Version(shard.component, shard.index_name, shard.index_version) for shard in result.covered
            )
            for stage, stage_seconds in result.timings.items():
                trace.timings.append(StageTime(stage, stage_seconds, retriever.component))
        if answered == 0:
            if failures and all(isinstance(e, InvalidArgument) for e in failures):
                raise failures[0]
            if failures and all(_reason(e) == "deadline_exceeded" for e in failures):
                raise DeadlineExceeded(
                    f"no retriever answered within the deadline ({len(shards)} shards queried)"
                )
            raise Unavailable(f"no retriever answered ({len(shards)} shards queried)")

        merge_started = time.monotonic()
        merged = {g: merge_shards(lists, depth) for g, lists in per_group.items() if lists}
        first_stage = (
            reciprocal_rank_fusion(merged) if len(variant.groups) > 1 else next(iter(merged.values()))
        )
        trace.timings.append(StageTime("merge", time.monotonic() - merge_started))

        ranked = first_stage_order(first_stage)
        if will_rerank and first_stage:
            ranked = await self._rerank(query, first_stage, merged, deadline, trace)

        hits = [
            Hit(
                document=c.document,
                snippet=snippet(c.document.text, self._snippet_chars),
                score=c.score,
                retrieval_score=c.retrieval_score,
                rerank_score=c.rerank_score,
                rank=rank,
            )
            for rank, c in enumerate(ranked[: query.top_k], start=1)
        ]
        trace.timings.append(StageTime("total", time.monotonic() - started))
        # Shards, not addresses: one retriever process may answer for several shards.
        queried = sum(retriever.shard_count for _, retriever in shards)
        coverage = Coverage(max(queried, answered), answered, tuple(trace.degradations))
        return SearchOutcome(
            hits,
            variant.name,
            trace.versions,
            trace.timings,
            coverage,
            trace.reranked,
            trace.embedding_fallbacks,
        )

    async def _embed(self, text: str, trace: _Trace) -> QueryEmbedding | None:
        """The query's vector, computed in a worker thread; None (the shards embed) if the encoder fails."""
        assert self._query_encoder is not None
        started = time.monotonic()
        try:
            vectors = await asyncio.to_thread(self._query_encoder.encode_queries, [text])
        except Exception:  # the shards can still embed the text: slower, not wrong
            logger.exception("query encoder failed; the dense shards embed the query themselves")
            return None
        trace.timings.append(StageTime("embed", time.monotonic() - started))
        return QueryEmbedding(vectors[0], self._query_encoder.identity)

    async def _embed_with_feedback(
        self, text: str, trace: _Trace, variant: Variant, timeout: float | None
    ) -> QueryEmbedding | None:
        """The query vector refined by pseudo-relevance feedback (gateway/prf.py): a first search of every
        dense shard for its top `prf_docs` with their stored vectors, merged to the global top, averaged in.

        Without feedback (every shard failed it, or none returned vectors) the plain query vector is used:
        the answer loses the refinement, not coverage.
        """
        started = time.monotonic()
        embedding = await self._embed(text, trace)
        if embedding is None:
            return None
        left = None if timeout is None else timeout - (time.monotonic() - started)
        if left is not None and left <= 0:
            return embedding
        feedback_started = time.monotonic()
        shards = self._retrievers[DENSE_GROUP]
        answers = await asyncio.gather(
            *(self._call(r, text, variant.prf_docs, left, embedding, with_vectors=True) for r in shards),
            return_exceptions=True,
        )
        lists = [a.candidates for a in answers if isinstance(a, RetrievalResult)]
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BaseException) and shard.component not in self._warned_feedback:
                # Once per shard: a shard that is down also fails (and is recorded) in the main search.
                self._warned_feedback.add(shard.component)
                logger.warning("%s: feedback search failed (%s); refined without it", shard.component, answer)
        top = [c.vector for c in merge_shards(lists, variant.prf_docs) if c.vector is not None]
        trace.timings.append(StageTime("feedback", time.monotonic() - feedback_started))
        if not top:
            return embedding
        return QueryEmbedding(rocchio(embedding.values, top, variant.prf_weight), embedding.encoder)

    def _retrieve_budget(self, deadline: float | None, will_rerank: bool) -> float | None:
        if deadline is None:
            return self._retrieve_cap
        remaining = self._left_before(deadline)
        if remaining <= 0:
            raise DeadlineExceeded("the request deadline was spent before retrieval started")
        budget = remaining * (1.0 - self._rerank_share) if will_rerank else remaining
        return budget if self._retrieve_cap is None else min(budget, self._retrieve_cap)

    async def _retrieve_one(
        self,
        retriever: Retriever,
        text: str,
        k: int,
        timeout: float | None,
        pending_embedding: asyncio.Future[QueryEmbedding | None] | None,
    ) -> _ShardAnswer:
        started = time.monotonic()
        fell_back = False
        embedding = None
        try:
            if pending_embedding is not None:
                # The embed counts against this shard's budget; its own stage time starts after it.
                embedding = await (
                    pending_embedding
                    if timeout is None
                    else asyncio.wait_for(asyncio.shield(pending_embedding), timeout)
                )
                if timeout is not None:
                    timeout -= time.monotonic() - started
                started = time.monotonic()
            try:
                result = await self._call(retriever, text, k, timeout, embedding)
            except FailedPrecondition as refused:
                if embedding is None:
                    raise
                # Built with another encoder: our vector is meaningless there, its own embedding is not.
                fell_back = True
                self._warn_fallback(retriever.component, refused)
                left = None if timeout is None else timeout - (time.monotonic() - started)
                if left is not None and left <= 0:
                    raise DeadlineExceeded(f"{retriever.component}: no time left to resend by text") from None
                result = await self._call(retriever, text, k, left, None)
        except Exception as exc:  # one shard failing degrades the answer, never fails it
            if not isinstance(exc, SearchError | TimeoutError):
                logger.exception("retriever %s failed unexpectedly", retriever.component)
            return _ShardAnswer(None, exc, time.monotonic() - started, fell_back)
        return _ShardAnswer(result, None, time.monotonic() - started, fell_back)

    async def _call(
        self,
        retriever: Retriever,
        text: str,
        k: int,
        timeout: float | None,
        embedding: QueryEmbedding | None,
        *,
        with_vectors: bool = False,
    ) -> RetrievalResult:
        call = retriever.retrieve(text, k, timeout=timeout, embedding=embedding, with_vectors=with_vectors)
        # The port promises to honour `timeout`; the outer bound guards adapters that do not.
        return await (call if timeout is None else asyncio.wait_for(call, timeout + self._margin))

    @property
    def _margin(self) -> float:
        return self._answer_margin.seconds

    def _left_before(self, deadline: float) -> float:
        """Seconds until the deadline, less the margin this request keeps to answer with what it has."""
        budget = deadline - time.monotonic()
        return budget - self._answer_margin.for_budget(budget)

    def _warn_fallback(self, component: str, refused: FailedPrecondition) -> None:
        if component not in self._warned_fallback:
            self._warned_fallback.add(component)
            logger.warning(
                "%s refused the gateway's query embedding, resending by text (slower; check the "
                "gateway's --query-encoder): %s",
                component,
                refused,
            )

    async def _rerank(
        self,
        query: SearchQuery,
        first_stage: list[Candidate],
        group_lists: Mapping[str, Sequence[Candidate]],
        deadline: float | None,
        trace: _Trace,
    ) -> list[RankedCandidate]:
        """Sends the head to the variant's reranker (or to each of its rerankers at once) and orders it.

        With several rerankers each is its own component (`reranker/<model>`): one that fails or runs late
        is left out of the fusion and recorded, the others still order the head.
        """
        assert self._reranker is not None and query.variant.reranker is not None
        variant = query.variant
        head = first_stage[: query.rerank_depth]
        timeout = None if deadline is None else self._left_before(deadline)
        if self._rerank_cap is not None:
            timeout = self._rerank_cap if timeout is None else min(timeout, self._rerank_cap)
        models = variant.reranker_models
        refusal = None
        if self._admission is not None and timeout is not None:
            refusal = self._admission.refusal(timeout)
        if refusal is not None:  # shed at once: a fast first-stage answer, not a late one
            answers: Sequence[tuple[RerankResult | None, BaseException | None, float]] = [
                (None, ResourceExhausted(refusal), 0.0) for _ in models
            ]
        else:
            with self._admission.admitted() if self._admission is not None else contextlib.nullcontext():
                answers = await asyncio.gather(
                    *(self._ask_reranker(query, model, head, timeout) for model in models)
                )
        answered: list[tuple[Sequence[float], float]] = []
        for model, weight, (result, failure, seconds) in zip(
            models, variant.fusion_weights, answers, strict=True
        ):
            component = (
                RERANKER_COMPONENT if len(models) == 1 else f"{RERANKER_COMPONENT}/{model_name(model)}"
            )
            trace.timings.append(StageTime("rerank", seconds, component))
            if result is None:
                error = failure or Unavailable("reranker returned nothing")
                trace.degradations.append(Degradation("rerank", _reason(error), component, _detail(error)))
                continue
            trace.versions.append(Version(component, result.model_name, result.model_version))
            if result.cache_bypassed:  # complete, but every score was computed: visible, not silent
                detail = "score cache unavailable: every candidate was scored"
                trace.degradations.append(
                    Degradation("rerank", "cache_bypassed", SCORE_CACHE_COMPONENT, detail)
                )
            for stage, stage_seconds in result.timings.items():
                trace.timings.append(StageTime(stage, stage_seconds, component))
            answered.append((result.scores, weight))
        if not answered:
            return first_stage_order(first_stage)
        trace.reranked = len(head)
        (scores, weight), more = answered[0], answered[1:]
        learned = None
        if variant.fusion_model is not None:
            learned = self._learned_scores(variant.fusion_model, head, group_lists, scores, trace)
        return rerank_order(
            first_stage,
            scores,
            fusion=variant.fusion,
            fusion_weight=weight,
            learned_scores=learned,
            more_rerankers=more,
        )

    async def _ask_reranker(
        self, query: SearchQuery, model: str, head: Sequence[Candidate], timeout: float | None
    ) -> tuple[RerankResult | None, BaseException | None, float]:
        """One reranker's scores of the head, or why there are none, and the seconds it took."""
        assert self._reranker is not None
        started = time.monotonic()
        if timeout is not None and timeout <= 0:
            return None, DeadlineExceeded("no time left for reranking"), 0.0
        try:
            call = self._reranker.rerank(
                query.text,
                [c.document for c in head],
                model=model,
                max_sequence_length=query.variant.max_sequence_length,
                use_cache=query.variant.cache,
                timeout=timeout,
            )
            # The outer bound fires at the rerank's own deadline: the margin after it is for answering.
            result = await (call if timeout is None else asyncio.wait_for(call, timeout))
            if len(result.scores) != len(head):
                raise Unavailable(f"reranker returned {len(result.scores)} scores for {len(head)} documents")
        except Exception as exc:  # a failed rerank degrades to the first-stage order
            if not isinstance(exc, SearchError | TimeoutError):
                logger.exception("reranker failed unexpectedly")
            return None, exc, time.monotonic() - started
        return result, None, time.monotonic() - started

    def _learned_scores(
        self,
        model_name: str,
        head: Sequence[Candidate],
        group_lists: Mapping[str, Sequence[Candidate]],
        rerank_scores: Sequence[float],
        trace: _Trace,
    ) -> list[float]:
        """The learned-fusion model's score of each head candidate, from every stage's ranks and scores."""
        model = self._fusion_models[model_name]
        started = time.monotonic()
        features = fusion_features(
            [c.document.doc_id for c in head],
            {g: [(c.document.doc_id, c.score) for c in ranked] for g, ranked in group_lists.items()},
            rerank_scores,
        )
        scores = model.score(features)
        trace.timings.append(StageTime("fuse", time.monotonic() - started, FUSION_COMPONENT))
        trace.versions.append(Version(FUSION_COMPONENT, model.name, model.version))
        return scores
