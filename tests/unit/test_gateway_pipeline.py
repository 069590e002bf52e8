"""SearchPipeline over plain fakes of the ports: fan-out, partial results, rerank fallback, deadlines."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.prf import rocchio
from gateway.reranker_routing import RoutedReranker
from gateway.variants import Variant
from search_common.documents import Document
from search_common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from tests.fakes import FakeQueryEncoder, FakeReranker, FakeRetriever

DOCS = [Document(f"d{i:02d}", f"title {i}", f"body of document {i} " * 5) for i in range(30)]
DENSE = Variant("dense", 1.0, "dense", retrieval_depth=10)
HYBRID = Variant("hybrid", 1.0, "hybrid", retrieval_depth=10)
CE = Variant("ce", 0.0, "dense", retrieval_depth=20, reranker="ce", rerank_depth=5)


def _shards(kind: str, n: int) -> list[FakeRetriever]:
    # Doc i scores 100 - i on the dense side, i on the BM25 side; docs dealt round-robin to shards.
    def score(i: int) -> float:
        return float(100 - i) if kind == "dense" else float(i)

    return [
        FakeRetriever(kind, s, [(DOCS[i], score(i)) for i in range(s, len(DOCS), n)], num_shards=n)  # type: ignore[arg-type]
        for s in range(n)
    ]


def _query(variant: Variant, top_k: int = 10, rerank_depth: int | None = None) -> SearchQuery:
    return SearchQuery(
        "q",
        top_k,
        variant,
        variant.retrieval_depth,
        variant.rerank_depth if rerank_depth is None else rerank_depth,
    )


async def test_sharded_dense_equals_single_shard() -> None:
    one = await SearchPipeline({"dense": _shards("dense", 1)}).search(_query(DENSE))
    three = await SearchPipeline({"dense": _shards("dense", 3)}).search(_query(DENSE))
    assert [h.document.doc_id for h in one.hits] == [h.document.doc_id for h in three.hits]
    assert [h.rank for h in three.hits] == list(range(1, 11))
    assert three.coverage.shards_queried == three.coverage.shards_answered == 3
    assert not three.coverage.degraded
    assert {v.component for v in three.versions} == {"dense/shard-0", "dense/shard-1", "dense/shard-2"}
    assert {t.stage for t in three.timings} >= {"retrieve", "merge", "total"}


async def test_hybrid_fuses_both_groups() -> None:
    pipeline = SearchPipeline({"dense": _shards("dense", 2), "bm25": _shards("bm25", 1)})
    outcome = await pipeline.search(_query(HYBRID, top_k=10))
    assert len(outcome.hits) == 10
    assert outcome.coverage.shards_queried == 3
    ids = [h.document.doc_id for h in outcome.hits]
    assert set(ids[:2]) == {"d00", "d29"}  # top-10 lists do not overlap; each list's best gets 1/61
    deeper = await pipeline.search(_query(HYBRID, top_k=20))  # depth rises to 20: d10..d19 in both lists
    assert {h.document.doc_id for h in deeper.hits[:10]} == {f"d{i}" for i in range(10, 20)}


async def test_failed_shard_gives_partial_degraded_result() -> None:
    shards = _shards("dense", 3)
    shards[1].error = Unavailable("dense/shard-1: unavailable")
    outcome = await SearchPipeline({"dense": shards}).search(_query(DENSE))
    assert len(outcome.hits) == 10
    assert outcome.coverage.shards_answered == 2 and outcome.coverage.shards_queried == 3
    assert outcome.coverage.degraded
    (deg,) = outcome.coverage.degradations
    assert (deg.stage, deg.reason, deg.component) == ("retrieve", "unavailable", "dense/shard-1")
    assert all(int(h.document.doc_id[1:]) % 3 != 1 for h in outcome.hits)


async def test_slow_shard_times_out_into_degradation() -> None:
    shards = _shards("dense", 2)
    shards[0].delay = 5.0
    outcome = await SearchPipeline({"dense": shards}).search(_query(DENSE), time.monotonic() + 0.3)
    assert outcome.coverage.shards_answered == 1
    assert outcome.coverage.degradations[0].reason == "deadline_exceeded"
    assert shards[1].calls[0][2] is not None and shards[1].calls[0][2] < 0.3


async def test_every_shard_failing_is_unavailable() -> None:
    shards = _shards("dense", 2)
    for shard in shards:
        shard.error = Unavailable("down")
    with pytest.raises(Unavailable, match="no retriever answered"):
        await SearchPipeline({"dense": shards}).search(_query(DENSE))
    for shard in shards:
        shard.error = InvalidArgument("query too long")
    with pytest.raises(InvalidArgument, match="query too long"):
        await SearchPipeline({"dense": shards}).search(_query(DENSE))
    for shard in shards:
        shard.error, shard.delay = None, 5.0
    with pytest.raises(DeadlineExceeded, match="no retriever answered within the deadline"):
        await SearchPipeline({"dense": shards}).search(_query(DENSE), time.monotonic() + 0.2)
    with pytest.raises(DeadlineExceeded, match="spent before retrieval"):
        await SearchPipeline({"dense": shards}).search(_query(DENSE), time.monotonic() - 1.0)


def _by_doc_number(query: str, doc: Document) -> float:
    return float(int(doc.doc_id[1:]))  # reverses the dense order


async def test_rerank_reorders_head_and_keeps_tail() -> None:
    reranker = FakeReranker(_by_doc_number)
    pipeline = SearchPipeline({"dense": _shards("dense", 2)}, reranker)
    outcome = await pipeline.search(_query(CE, top_k=8))
    ids = [h.document.doc_id for h in outcome.hits]
    assert ids == ["d04", "d03", "d02", "d01", "d00", "d05", "d06", "d07"]
    assert reranker.calls[0][1] == ["d00", "d01", "d02", "d03", "d04"]
    assert reranker.calls[0][2] == "ce"
    assert outcome.hits[0].rerank_score == 4.0 and outcome.hits[5].rerank_score is None
    assert any(v.component == "reranker" for v in outcome.versions)
    assert not outcome.coverage.degraded


async def test_a_bypassed_score_cache_is_reported_and_the_answer_stays_reranked() -> None:
    pipeline = SearchPipeline(
        {"dense": _shards("dense", 2)}, FakeReranker(_by_doc_number, cache_bypassed=True)
    )
    outcome = await pipeline.search(_query(CE, top_k=8))
    assert [h.document.doc_id for h in outcome.hits][:5] == ["d04", "d03", "d02", "d01", "d00"]
    assert outcome.reranked == 5
    (deg,) = outcome.coverage.degradations
    assert (deg.stage, deg.reason, deg.component) == ("rerank", "cache_bypassed", "score-cache")
    assert "every candidate was scored" in deg.detail


@pytest.mark.parametrize(
    ("reranker", "deadline", "reason"),
    [
        (FakeReranker(_by_doc_number, error=Unavailable("reranker: unavailable")), None, "unavailable"),
        (FakeReranker(_by_doc_number, delay=5.0), 0.4, "deadline_exceeded"),
    ],
)
async def test_reranker_failure_falls_back_to_first_stage(
    reranker: FakeReranker, deadline: float | None, reason: str
) -> None:
    pipeline = SearchPipeline({"dense": _shards("dense", 2)}, reranker)
    absolute = None if deadline is None else time.monotonic() + deadline
    outcome = await pipeline.search(_query(CE, top_k=12), absolute)
    assert [h.document.doc_id for h in outcome.hits] == [f"d{i:02d}" for i in range(12)]
    assert all(h.rerank_score is None for h in outcome.hits)
    assert outcome.coverage.degraded
    (deg,) = outcome.coverage.degradations
    assert (deg.stage, deg.reason, deg.component) == ("rerank", reason, "reranker")
    assert outcome.coverage.shards_answered == 2


async def test_top_k_beyond_rerank_depth_and_retrieval_depth() -> None:
    pipeline = SearchPipeline({"dense": _shards("dense", 2)}, FakeReranker(_by_doc_number))
    outcome = await pipeline.search(SearchQuery("q", 25, CE, 10, 5))
    assert len(outcome.hits) == 25  # retrieval depth is raised to top_k; never fewer hits


async def test_rerank_depth_zero_skips_reranker() -> None:
    reranker = FakeReranker(_by_doc_number)
    outcome = await SearchPipeline({"dense": _shards("dense", 1)}, reranker).search(
        _query(CE, rerank_depth=0)
    )
    assert reranker.calls == [] and outcome.hits[0].document.doc_id == "d00"


async def test_variant_needing_missing_parts_is_invalid_argument() -> None:
    pipeline = SearchPipeline({"dense": _shards("dense", 1)})
    with pytest.raises(InvalidArgument, match="needs the bm25 retriever"):
        await pipeline.search(_query(HYBRID))
    with pytest.raises(InvalidArgument, match="needs a reranker"):
        await pipeline.search(_query(CE))


async def test_per_stage_caps_bound_each_downstream_timeout() -> None:
    shards = _shards("dense", 2)
    reranker = FakeReranker(_by_doc_number)
    pipeline = SearchPipeline({"dense": shards}, reranker, retrieve_timeout=0.3, rerank_timeout=0.2)
    await pipeline.search(_query(CE), time.monotonic() + 10.0)
    timeouts = [timeout for shard in shards for (_, _, timeout) in shard.calls]
    assert len(timeouts) == 2 and all(t is not None and 0 < t <= 0.3 for t in timeouts)
    ((_, _, _, rerank_timeout),) = reranker.calls
    assert rerank_timeout is not None and 0 < rerank_timeout <= 0.2
    # Without a request deadline the caps still bound each call.
    await pipeline.search(_query(CE), None)
    assert shards[0].calls[-1][2] == 0.3 and reranker.calls[-1][3] == 0.2


async def test_a_slow_reranker_past_its_cap_degrades_the_answer_early() -> None:
    pipeline = SearchPipeline(
        {"dense": _shards("dense", 1)}, FakeReranker(_by_doc_number, delay=5.0), rerank_timeout=0.1
    )
    outcome = await pipeline.search(_query(CE), time.monotonic() + 10.0)
    (deg,) = outcome.coverage.degradations
    assert (deg.stage, deg.reason) == ("rerank", "deadline_exceeded")


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rerank_timeout must be positive"):
        SearchPipeline({"dense": _shards("dense", 1)}, rerank_timeout=0)


async def test_query_encoder_embeds_once_for_the_dense_shards_only() -> None:
    dense, bm25 = _shards("dense", 3), _shards("bm25", 1)
    encoder = FakeQueryEncoder("enc@1")
    for shard in dense:
        shard.encoder = "enc@1"
    pipeline = SearchPipeline({"dense": dense, "bm25": bm25}, query_encoder=encoder)
    outcome = await pipeline.search(_query(HYBRID))
    assert encoder.calls == [["q"]]
    assert all(s.embeddings[-1] is not None and s.embeddings[-1].encoder == "enc@1" for s in dense)
    assert bm25[0].embeddings == [None]
    assert [t for t in outcome.timings if t.stage == "embed" and not t.component]
    assert outcome.embedding_fallbacks == 0
    await pipeline.search(_query(Variant("bm25", 1.0, "bm25", retrieval_depth=10)))
    assert len(encoder.calls) == 1, "a variant without dense shards needs no embedding"


async def test_lexical_shards_do_not_wait_for_the_query_embedding() -> None:
    # The encoder cannot finish before the BM25 shard has been called: were the BM25 call made after the
    # embed, the encoder would fail and the dense shards would get no vector.
    bm25_called = threading.Event()
    dense, bm25 = _shards("dense", 2), _shards("bm25", 1)
    bm25[0].on_call = bm25_called.set
    encoder = FakeQueryEncoder("enc@1", gate=bm25_called)
    outcome = await SearchPipeline({"dense": dense, "bm25": bm25}, query_encoder=encoder).search(
        _query(HYBRID)
    )
    for shard in dense:
        (embedding,) = shard.embeddings
        assert embedding is not None and embedding.encoder == "enc@1"
    assert not outcome.coverage.degraded and len(outcome.hits) == 10


async def test_embed_counts_against_the_dense_shards_budget() -> None:
    never = threading.Event()  # the embed outlasts the deadline (its worker gives up after the test)
    dense, bm25 = _shards("dense", 2), _shards("bm25", 1)
    encoder = FakeQueryEncoder("enc@1", gate=never, gate_timeout=1.0)
    pipeline = SearchPipeline({"dense": dense, "bm25": bm25}, query_encoder=encoder)
    outcome = await pipeline.search(_query(HYBRID), time.monotonic() + 0.3)
    assert outcome.coverage.shards_answered == 1 and len(bm25[0].calls) == 1
    assert all(s.calls == [] for s in dense), "a dense shard is not called once its budget is spent"
    assert {(d.component, d.reason) for d in outcome.coverage.degradations} == {
        ("dense/shard-0", "deadline_exceeded"),
        ("dense/shard-1", "deadline_exceeded"),
    }
    assert [h.document.doc_id for h in outcome.hits] == [f"d{i}" for i in range(29, 19, -1)]


async def test_refused_embedding_is_resent_by_text_and_counted() -> None:
    plain = await SearchPipeline({"dense": _shards("dense", 2)}).search(_query(DENSE))
    dense = _shards("dense", 2)
    dense[1].encoder = "other@2"  # shard 0 takes any vector, shard 1 was built with another encoder
    outcome = await SearchPipeline({"dense": dense}, query_encoder=FakeQueryEncoder("enc@1")).search(
        _query(DENSE)
    )
    assert [h.document.doc_id for h in outcome.hits] == [h.document.doc_id for h in plain.hits]
    assert not outcome.coverage.degraded and outcome.embedding_fallbacks == 1
    assert len(dense[0].embeddings) == 1 and dense[0].embeddings[0] is not None
    assert [e is None for e in dense[1].embeddings] == [False, True]


PRF = Variant("dense-prf", 0.0, "dense", retrieval_depth=10, prf_docs=2, prf_weight=0.5)


def _vector_shards(n: int, encoder: str = "enc@1") -> list[FakeRetriever]:
    """Dense shards whose doc i has the unit vector along axis i % 4 (4-d), scored 100 - i."""
    shards = _shards("dense", n)
    for shard in shards:
        shard.encoder = encoder
        shard._vectors = {d.doc_id: np.eye(4, dtype=np.float32)[int(d.doc_id[1:]) % 4] for d in DOCS}
    return shards


async def test_feedback_refines_the_query_with_the_global_top_documents() -> None:
    dense = _vector_shards(3)
    pipeline = SearchPipeline({"dense": dense}, query_encoder=FakeQueryEncoder("enc@1"))
    outcome = await pipeline.search(_query(PRF))
    # Each shard is asked twice: its top 2 with their vectors, then the search with the refined vector.
    assert all([k for _, k, _ in s.calls] == [2, 10] for s in dense)
    # The global top 2 are d00 and d01 (on shards 0 and 1), vectors e0 and e1.
    expected = rocchio(np.full(4, 0.5, dtype=np.float32), [np.eye(4)[0], np.eye(4)[1]], 0.5)
    for shard in dense:
        first, second = shard.embeddings
        assert first is not None and second is not None
        np.testing.assert_allclose(first.values, np.full(4, 0.5))
        np.testing.assert_allclose(second.values, expected, rtol=1e-6)
        assert second.encoder == "enc@1"
    assert [t for t in outcome.timings if t.stage == "feedback"]
    assert [h.document.doc_id for h in outcome.hits][:3] == ["d00", "d01", "d02"]


async def test_feedback_that_fails_everywhere_leaves_the_plain_query_vector() -> None:
    dense = _vector_shards(2)
    for shard in dense:
        shard._vectors = {}  # shards that return no vectors: nothing to average
    pipeline = SearchPipeline({"dense": dense}, query_encoder=FakeQueryEncoder("enc@1"))
    outcome = await pipeline.search(_query(PRF))
    assert not outcome.coverage.degraded and len(outcome.hits) == 10
    for shard in dense:
        np.testing.assert_allclose(shard.embeddings[-1].values, np.full(4, 0.5))  # type: ignore[union-attr]


async def test_feedback_needs_the_gateways_query_encoder() -> None:
    with pytest.raises(InvalidArgument, match="pseudo-relevance feedback, which needs the gateway's query"):
        await SearchPipeline({"dense": _vector_shards(1)}).search(_query(PRF))


def test_rocchio_moves_the_query_towards_the_feedback_and_normalises() -> None:
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    refined = rocchio(query, [np.array([0.0, 1.0, 0.0], dtype=np.float32)], 1.0)
    np.testing.assert_allclose(refined, [2**-0.5, 2**-0.5, 0.0], rtol=1e-6)
    assert rocchio(query, [], 0.5) is query
    with pytest.raises(ValueError, match="do not fit a 3-d query"):
        rocchio(query, [np.ones(4, dtype=np.float32)], 0.5)
    with pytest.raises(ValueError, match="zero or non-finite"):
        rocchio(query, [np.array([-1.0, 0.0, 0.0], dtype=np.float32)], 1.0)


async def test_a_shard_failing_feedback_is_left_out_and_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dense = _vector_shards(3)
    dense[2].error = Unavailable("shard 2 is down")
    pipeline = SearchPipeline({"dense": dense}, query_encoder=FakeQueryEncoder("enc@1"))
    with caplog.at_level("WARNING", logger="gateway.pipeline"):
        for _ in range(2):
            outcome = await pipeline.search(_query(PRF))
    # The global top 2 of the shards that answered: d00 (shard 0) and d01 (shard 1).
    expected = rocchio(np.full(4, 0.5, dtype=np.float32), [np.eye(4)[0], np.eye(4)[1]], 0.5)
    np.testing.assert_allclose(dense[0].embeddings[-1].values, expected, rtol=1e-6)  # type: ignore[union-attr]
    assert outcome.coverage.degraded and outcome.coverage.shards_answered == 2
    assert len([r for r in caplog.records if "feedback search failed" in r.getMessage()]) == 1


BOTH = Variant(
    "both",
    0.0,
    "dense",
    retrieval_depth=20,
    reranker="up",
    rerank_depth=5,
    fusion="rrf",
    fusion_weight=0.5,
    more_rerankers=(("down", 0.5),),
)


async def test_several_rerankers_score_the_same_head_and_are_fused() -> None:
    up = FakeReranker(_by_doc_number)  # reverses the head
    down = FakeReranker(lambda _q, d: -_by_doc_number(_q, d))  # keeps it
    pipeline = SearchPipeline({"dense": _shards("dense", 2)}, RoutedReranker({"up": up, "down": down}))
    outcome = await pipeline.search(_query(BOTH, top_k=7))
    assert up.calls[0][1] == down.calls[0][1] == ["d00", "d01", "d02", "d03", "d04"]
    # Equal weights on opposite orders: the head's ends tie (first-stage order breaks it) above its middle.
    assert [h.document.doc_id for h in outcome.hits] == ["d00", "d04", "d01", "d03", "d02", "d05", "d06"]
    assert {v.component: v.name for v in outcome.versions if v.component.startswith("reranker")} == {
        "reranker/up": "up",
        "reranker/down": "down",
    }
    assert {t.component for t in outcome.timings if t.stage == "rerank"} == {"reranker/up", "reranker/down"}
    assert outcome.reranked == 5 and not outcome.coverage.degraded


async def test_a_failed_reranker_of_several_is_left_out_and_recorded() -> None:
    up = FakeReranker(_by_doc_number)
    down = FakeReranker(_by_doc_number, error=Unavailable("down: unavailable"))
    pipeline = SearchPipeline({"dense": _shards("dense", 2)}, RoutedReranker({"up": up, "down": down}))
    outcome = await pipeline.search(_query(BOTH, top_k=7))
    # "up" alone at its weight 0.5; the first stage's order takes the failed one's share (0.5).
    assert [h.document.doc_id for h in outcome.hits][:5] == ["d00", "d04", "d01", "d03", "d02"]
    assert outcome.hits[0].rerank_score == 0.0  # scored by "up", the one that answered
    (deg,) = outcome.coverage.degradations
    assert (deg.stage, deg.reason, deg.component) == ("rerank", "unavailable", "reranker/down")
    up.error = Unavailable("up: unavailable")
    both_down = await pipeline.search(_query(BOTH, top_k=7))
    assert all(h.rerank_score is None for h in both_down.hits) and both_down.reranked == 0
    assert {d.component for d in both_down.coverage.degradations} == {"reranker/up", "reranker/down"}
