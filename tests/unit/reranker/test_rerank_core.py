"""RerankCore over a plain fake scorer and the real in-process LRU cache: validation and read-through."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from reranker_service.cache.lru import LruScoreCache
from reranker_service.metrics import RerankerMetrics
from reranker_service.scoring import RequestLimits, RerankCore, cache_key
from search_common.documents import Document
from search_common.errors import DeadlineExceeded, InvalidArgument, NotFound


class FakeScorer:
    """Scores a text by its length; records what it was asked to score."""

    def __init__(
        self, name: str = "fake-ce", version: str = "v1", max_length: int = 128, engine: str = "fake"
    ) -> None:
        self._name, self._version, self._max_length, self._engine = name, version, max_length, engine
        self.calls: list[list[str]] = []
        self.started = 0

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def model_version(self) -> str:
        return self._version

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def engine(self) -> str:
        return self._engine

    async def start(self) -> None:
        self.started += 1

    async def score(
        self, query: str, texts: Sequence[str], max_length: int | None = None
    ) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        return np.array([len(t) / 7.0 for t in texts], dtype=np.float32)

    async def close(self) -> None:
        pass


DOCS = [Document("d1", "", "short"), Document("d2", "Title", "a longer text"), Document("d3", "", "mid text")]


async def test_scores_come_back_in_input_order_and_cache_hits_are_identical() -> None:
    scorer = FakeScorer()
    core = RerankCore(scorer, LruScoreCache(100))
    first = await core.rerank("query", DOCS)
    assert first.scores == [np.float32(len(d.model_text()) / 7.0) for d in DOCS]
    assert first.cache_hits == 0 and first.model_name == "fake-ce" and first.model_version == "v1"
    assert set(first.timings) == {"cache", "inference"}
    second = await core.rerank("query", DOCS)
    assert second.scores == first.scores
    assert second.cache_hits == 3
    assert len(scorer.calls) == 1  # the second request was all hits
    assert scorer.started == 2  # the core asks before every request; adapters make it cheap
    stats = core.cache_stats()
    assert (stats.hits, stats.misses, stats.errors) == (3, 3, 0)


async def test_only_misses_are_scored() -> None:
    scorer = FakeScorer()
    core = RerankCore(scorer, LruScoreCache(100))
    await core.rerank("query", DOCS[:1])
    result = await core.rerank("query", DOCS)
    assert result.cache_hits == 1
    assert scorer.calls[-1] == [DOCS[1].model_text(), DOCS[2].model_text()]


async def test_use_cache_false_neither_reads_nor_writes() -> None:
    cache = LruScoreCache(100)
    core = RerankCore(FakeScorer(), cache)
    result = await core.rerank("query", DOCS, use_cache=False)
    assert result.cache_hits == 0 and len(cache) == 0


def test_cache_key_changes_with_model_version_engine_text_and_length() -> None:
    base = cache_key("m", "v1", "onnx", 128, "qh", "d1", "text")
    assert cache_key("m", "v2", "onnx", 128, "qh", "d1", "text") != base
    assert cache_key("m", "v1", "torch", 128, "qh", "d1", "text") != base
    assert cache_key("m", "v1", "onnx", 128, "qh", "d1", "edited text") != base
    assert cache_key("m", "v1", "onnx", 64, "qh", "d1", "text") != base
    assert cache_key("m2", "v1", "onnx", 128, "qh", "d1", "text") != base


async def test_replicas_on_different_engines_do_not_read_each_others_scores() -> None:
    shared = LruScoreCache(100)
    await RerankCore(FakeScorer(engine="onnx"), shared).rerank("query", DOCS)
    torch_scorer = FakeScorer(engine="torch")
    result = await RerankCore(torch_scorer, shared).rerank("query", DOCS)
    assert result.cache_hits == 0 and len(torch_scorer.calls) == 1
    again = await RerankCore(FakeScorer(engine="onnx"), shared).rerank("query", DOCS)
    assert again.cache_hits == len(DOCS)


@pytest.mark.parametrize(
    ("query", "documents", "kwargs", "message"),
    [
        ("", DOCS, {}, "query must not be empty"),
        ("   ", DOCS, {}, "query must not be empty"),
        ("x" * 51, DOCS, {}, "query has 51 characters; the limit is 50"),
        ("q", [], {}, "documents must not be empty"),
        ("q", DOCS * 2, {}, "6 documents in one request; the limit is 5"),
        ("q", [Document("d", "", " ")], {}, "documents[0] has neither title nor text"),
        ("q", [Document("d", "", "y" * 101)], {}, "documents[0] has 101 characters; the limit is 100"),
        ("q", DOCS, {"max_sequence_length": 4}, "max_sequence_length must be 0 (model default) or between 8"),
        ("q", DOCS, {"max_sequence_length": 129}, "between 8 and 128, got 129"),
    ],
)
async def test_bad_requests_raise_invalid_argument_with_a_helpful_message(
    query: str, documents: list[Document], kwargs: dict[str, int], message: str
) -> None:
    core = RerankCore(
        FakeScorer(), None, RequestLimits(max_documents=5, max_query_chars=50, max_document_chars=100)
    )
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        await core.rerank(query, documents, **kwargs)  # type: ignore[arg-type]


async def test_unknown_model_is_not_found() -> None:
    core = RerankCore(FakeScorer(), None)
    with pytest.raises(NotFound, match="unknown model 'other'; this reranker serves 'fake-ce'"):
        await core.rerank("q", DOCS, model="other")
    assert (await core.rerank("q", DOCS, model="fake-ce")).scores


async def test_a_pinned_model_version_must_be_the_served_one() -> None:
    core = RerankCore(FakeScorer(version="v2"), None)
    assert (await core.rerank("q", DOCS, model="fake-ce@v2")).model_version == "v2"
    with pytest.raises(NotFound, match="version 'v1' is not served here; this reranker serves version 'v2'"):
        await core.rerank("q", DOCS, model="fake-ce@v1")


async def test_no_time_left_is_deadline_exceeded() -> None:
    core = RerankCore(FakeScorer(), None)
    with pytest.raises(DeadlineExceeded):
        await core.rerank("q", DOCS, timeout=0.0)


async def test_metrics_count_cache_results_and_scored_pairs() -> None:
    registry = CollectorRegistry()
    core = RerankCore(FakeScorer(), LruScoreCache(100), metrics=RerankerMetrics(registry))
    await core.rerank("query", DOCS[:1])
    await core.rerank("query", DOCS)

    def sample(name: str, **labels: str) -> float:
        value = registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    assert sample("search_reranker_cache_lookups_total", result="hit") == 1
    assert sample("search_reranker_cache_lookups_total", result="miss") == 3
    assert sample("search_reranker_batch_pairs_count") == 2
    assert sample("search_reranker_batch_pairs_sum") == 3
    assert sample("search_reranker_cache_bypasses_total") == 0


class _FailingCache(LruScoreCache):
    """An LRU cache whose reads fail the way the Redis adapter's do: every key a miss, one error counted."""

    def __init__(self) -> None:
        super().__init__(100)
        self.failures = 0

    @property
    def errors(self) -> int:
        return self.failures

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        self.failures += 1
        return [None] * len(keys)


async def test_stage_metrics_carry_the_callers_variant_and_cache_errors() -> None:
    from search_common.variant_label import serving_variant

    registry = CollectorRegistry()
    metrics = RerankerMetrics(registry)
    metrics.set_model("fake-ce", "v1", "onnx")
    core = RerankCore(FakeScorer(), _FailingCache(), metrics=metrics)
    with serving_variant("hybrid+ce"):
        await core.rerank("query", DOCS)
    await core.rerank("query", DOCS[:1])

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    count = "search_reranker_stage_duration_seconds_count"
    assert sample(count, stage="cache_lookup", variant="hybrid+ce", status="error") == 1
    assert sample(count, stage="inference", variant="hybrid+ce", status="ok") == 1
    assert sample(count, stage="inference", variant="none", status="ok") == 1
    assert sample("search_reranker_cache_lookups_total", result="error") == len(DOCS) + 1
    assert sample("search_reranker_cache_lookups_total", result="miss") == 0
    assert sample("search_reranker_model_info", model="fake-ce", version="v1", backend="onnx") == 1
