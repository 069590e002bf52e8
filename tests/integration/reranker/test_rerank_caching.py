"""The reranking core with the in-process ONNX scorer and a real Redis score cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from operations.redis_server import RedisServer
from reranker_service.backends.embedded import EmbeddedScorer
from reranker_service.bootstrap import build_local_reranker
from reranker_service.cache.redis import RedisScoreCache
from reranker_service.scoring import RerankCore
from search_common.documents import Document

QUERY = "is vitamin d linked to bone density"
DOCS = [Document(f"doc-{i}", f"Title {i}", "vitamin d and bone " * (i + 1)) for i in range(12)]


@pytest.fixture(scope="module")
def scorer_v1(artifact_v1: Path) -> Iterator[EmbeddedScorer]:
    scorer = EmbeddedScorer.load(artifact_v1, intra_op_threads=1)
    yield scorer
    asyncio.run(scorer.close())


@pytest.fixture(scope="module")
def scorer_v2(artifact_v2: Path) -> Iterator[EmbeddedScorer]:
    scorer = EmbeddedScorer.load(artifact_v2, intra_op_threads=1)
    yield scorer
    asyncio.run(scorer.close())


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _core(scorer: EmbeddedScorer, redis_url: str) -> RerankCore:
    return RerankCore(scorer, RedisScoreCache(redis_url, ttl_seconds=300, retry_after_seconds=0.0))


async def test_a_cache_hit_returns_identical_scores(
    scorer_v1: EmbeddedScorer, own_redis: RedisServer
) -> None:
    core = _core(scorer_v1, own_redis.url)
    cold = await core.rerank(QUERY, DOCS)
    warm = await core.rerank(QUERY, DOCS)
    assert cold.cache_hits == 0 and warm.cache_hits == len(DOCS)
    assert warm.scores == cold.scores  # bit-identical, not merely close
    assert warm.timings["inference"] == 0.0
    # A second process (a new core, same Redis) reads the same scores too.
    other = _core(scorer_v1, own_redis.url)
    assert (await other.rerank(QUERY, DOCS)).scores == cold.scores
    # An edited document under the same id is scored afresh.
    edited = [*DOCS[:-1], Document(DOCS[-1].doc_id, DOCS[-1].title, "an entirely different text")]
    assert (await other.rerank(QUERY, edited)).cache_hits == len(DOCS) - 1
    assert core.cache_stats().errors == 0


async def test_a_model_version_change_misses_the_cache(
    scorer_v1: EmbeddedScorer, scorer_v2: EmbeddedScorer, own_redis: RedisServer
) -> None:
    old = await _core(scorer_v1, own_redis.url).rerank(QUERY, DOCS)
    new_core = _core(scorer_v2, own_redis.url)
    new = await new_core.rerank(QUERY, DOCS)
    assert (old.model_version, new.model_version) == ("v1", "v2")
    assert new.cache_hits == 0
    assert not np.allclose(new.scores, old.scores)  # v2's head differs: old scores would have been wrong
    assert (await new_core.rerank(QUERY, DOCS)).cache_hits == len(DOCS)


async def test_redis_killed_mid_test_the_reranker_still_answers(
    scorer_v1: EmbeddedScorer, own_redis: RedisServer
) -> None:
    core = _core(scorer_v1, own_redis.url)
    before = await core.rerank(QUERY, DOCS)
    own_redis.kill()
    during = await core.rerank(QUERY, DOCS)
    assert during.cache_hits == 0 and during.cache_bypassed and not before.cache_bypassed
    np.testing.assert_allclose(during.scores, before.scores, atol=1e-6)
    assert core.cache_stats().errors >= 2  # the lookup and the write-back were bypassed
    own_redis.start()
    await core.rerank(QUERY, DOCS)
    assert (await core.rerank(QUERY, DOCS)).cache_hits == len(DOCS)  # reconnected by itself


async def test_the_embedded_reranker_for_the_gateway(artifact_v1: Path, artifact_v2: Path) -> None:
    reranker = build_local_reranker(artifact_v1.parent)  # a root: its newest version, v2
    try:
        first = await reranker.rerank(QUERY, DOCS[:3])
        second = await reranker.rerank(QUERY, DOCS[:3])
        assert first.model_name == "cross-encoder-minilm" and first.model_version == "v2"
        assert second.cache_hits == 3 and second.scores == first.scores
    finally:
        await reranker.close()
