"""gateway.overload: the learned answering margin and rerank shedding, and the pipeline using them (fakes)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.overload import AnswerMargin, RerankAdmission, watch_event_loop_lag
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import Variant
from search_common.documents import Document
from tests.fakes import FakeReranker, FakeRetriever

DOCS = [Document(f"d{i:02d}", "", f"document {i}") for i in range(20)]
CE = Variant("ce", 0.0, "dense", retrieval_depth=10, reranker="ce", rerank_depth=5)


def test_the_margin_follows_the_observed_cost_within_its_floor_and_cap() -> None:
    margin = AnswerMargin(floor=0.02, cap=0.5, window=100)
    assert margin.seconds == 0.02
    for _ in range(100):
        margin.observe(0.001)
    assert margin.seconds == 0.02  # cheap answers: the floor
    for _ in range(5):
        margin.observe(0.1)  # a burst: the 99th percentile moves, doubled
    assert margin.seconds == pytest.approx(0.2)
    margin.observe(10.0)
    assert margin.seconds == pytest.approx(0.2)  # one stall in a hundred is not the 99th percentile
    margin.observe(10.0)
    assert margin.seconds == 0.5  # two are, and the margin never passes the cap
    assert margin.for_budget(0.3) == 0.15  # nor past half of what a request has left
    for _ in range(100):
        margin.observe(0.001)
    assert margin.seconds == 0.02  # the burst has left the window
    with pytest.raises(ValueError, match="floor <= cap"):
        AnswerMargin(floor=0.5, cap=0.1)


async def test_the_lag_watcher_sees_a_blocked_event_loop() -> None:
    margin = AnswerMargin(floor=0.0, cap=5.0)
    watcher = asyncio.create_task(watch_event_loop_lag(margin, interval=0.01))
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # noqa: ASYNC251  # the loop is held, as a burst of requests holds it
    await asyncio.sleep(0.05)
    watcher.cancel()
    assert margin.seconds >= 0.4  # about 2 x the 0.29 s the timer ran late


def test_admission_sheds_past_the_in_flight_limit_and_when_recent_reranks_were_slower() -> None:
    admission = RerankAdmission(max_in_flight=2)
    assert admission.refusal(1.0) is None
    with admission.admitted(), admission.admitted():
        refusal = admission.refusal(1.0)
        assert refusal is not None and "2 reranks in flight (limit 2)" in refusal
    assert admission.in_flight == 0 and admission.latency is not None
    admission.latency = 0.5
    assert admission.refusal(0.2) is None  # nothing in flight: the estimate is stale, one goes to renew it
    with admission.admitted():
        slow = admission.refusal(0.2)
        assert slow is not None and "took 500 ms, 200 ms left" in slow
        assert admission.refusal(0.6) is None
    with pytest.raises(ValueError):
        RerankAdmission(max_in_flight=-1)


def _pipeline(reranker: FakeReranker, admission: RerankAdmission) -> SearchPipeline:
    shard = FakeRetriever("dense", 0, [(d, float(100 - i)) for i, d in enumerate(DOCS)], num_shards=1)  # type: ignore[arg-type]
    return SearchPipeline({"dense": [shard]}, reranker, rerank_admission=admission)


async def test_a_shed_rerank_answers_at_once_from_the_first_stage_flagged_overloaded() -> None:
    reranker = FakeReranker(lambda _q, d: float(d.doc_id[1:]))
    admission = RerankAdmission(max_in_flight=1)
    pipeline = _pipeline(reranker, admission)
    query = SearchQuery("q", 5, CE, 10, 5)
    with admission.admitted():  # another request holds the only slot
        outcome = await pipeline.search(query, time.monotonic() + 5.0)
    assert reranker.calls == []  # never sent
    assert [h.document.doc_id for h in outcome.hits] == ["d00", "d01", "d02", "d03", "d04"]
    (deg,) = outcome.coverage.degradations
    assert (deg.stage, deg.reason, deg.component) == ("rerank", "overloaded", "reranker")
    assert "limit 1" in deg.detail
    reranked = await pipeline.search(query, time.monotonic() + 5.0)  # the slot is free again
    assert not reranked.coverage.degraded and reranked.hits[0].document.doc_id == "d04"


async def test_a_slow_reranker_past_its_rerank_deadline_leaves_the_margin_for_answering() -> None:
    reranker = FakeReranker(lambda _q, d: 0.0, delay=5.0)
    pipeline = SearchPipeline(
        {"dense": [FakeRetriever("dense", 0, [(d, 1.0) for d in DOCS], num_shards=1)]},  # type: ignore[arg-type]
        reranker,
        answer_margin=AnswerMargin(floor=0.4, cap=0.4),
    )
    started = time.monotonic()
    outcome = await pipeline.search(SearchQuery("q", 5, CE, 10, 5), started + 1.0)
    # The reranker is given up at the deadline less the margin, not at the deadline.
    assert time.monotonic() - started < 0.9
    assert outcome.coverage.degradations[0].reason == "deadline_exceeded"
