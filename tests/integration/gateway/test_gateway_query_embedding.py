"""Embed once at the gateway: the same answers over a real multi-shard stack, the embed stage in the gateway's
metrics, and a text-only resend (counted) when the shards were built with another encoder."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from search.v1 import search_service_pb2

from gateway.metrics import GatewayMetrics
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import VariantBounds, load_variants
from model_runtimes.bi_encoder import BiEncoder, default_model_dir
from search_common.ports import Retriever

StackFactory = Callable[..., AbstractAsyncContextManager[Any]]

QUERIES = [
    "how to compress a file with gzip",
    "parse command line arguments and flags",
    "sha256 checksum of a password",
    "format a timestamp in iso format",
]


def _ranking(response: search_service_pb2.SearchResponse) -> list[tuple[str, float]]:
    return [(hit.doc_id, round(hit.score, 5)) for hit in response.hits]


@pytest.fixture(scope="module")
def renamed_encoder(tmp_path_factory: pytest.TempPathFactory) -> BiEncoder:
    """The packaged weights under another name: a real encoder whose identity no shard here was built with."""
    directory = tmp_path_factory.mktemp("renamed-encoder")
    for entry in default_model_dir().iterdir():
        (directory / entry.name).symlink_to(entry)
    (directory / "manifest.json").write_text(json.dumps({"name": "renamed-minilm"}))
    return BiEncoder.load(directory)


async def _search_all(running: Any, variant: str) -> list[search_service_pb2.SearchResponse]:
    return [
        await running.stub.Search(
            search_service_pb2.SearchRequest(query=q, top_k=10, variant=variant), timeout=30
        )
        for q in QUERIES
    ]


def _stage_count(registry: CollectorRegistry, stage: str, variant: str) -> float | None:
    return registry.get_sample_value(
        "search_gateway_stage_duration_seconds_count", {"stage": stage, "variant": variant, "status": "ok"}
    )


async def test_embedding_once_ranks_like_every_shard_embedding(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    encoder: BiEncoder,
) -> None:
    groups = {"dense": shards["dense-3"], "bm25": shards["bm25-1"]}
    dirs = {"dense": indexes["dense-3"], "bm25": indexes["bm25-1"]}
    async with stack(groups, dirs) as plain:
        by_shards = await _search_all(plain, "hybrid")
    registry = CollectorRegistry()
    async with stack(groups, dirs, query_encoder=encoder, metrics=GatewayMetrics(registry)) as once:
        by_gateway = await _search_all(once, "hybrid")
        bm25_only = await _search_all(once, "bm25")
    for a, b in zip(by_shards, by_gateway, strict=True):
        assert _ranking(a) == _ranking(b)
        assert not b.metadata.coverage.degraded and b.metadata.coverage.shards_answered == 4
        stages = {(t.stage, t.component) for t in b.metadata.timings}
        assert ("embed", "") in stages  # the gateway's own
        # (A BM25 shard times its tokenising as "embed".)
        assert not any(s == "embed" and c.startswith("dense/") for s, c in stages), "a shard embedded again"
        assert ("embed", "") not in {(t.stage, t.component) for t in a.metadata.timings}
    assert _stage_count(registry, "embed", "hybrid") == len(QUERIES)
    # A variant without dense shards pays no embedding.
    assert all((t.stage, t.component) != ("embed", "") for r in bm25_only for t in r.metadata.timings)
    assert not _stage_count(registry, "embed", "bm25")
    fallbacks = registry.get_sample_value("search_gateway_query_embedding_fallbacks_total")
    assert fallbacks == 0


async def test_other_encoder_falls_back_to_text_and_is_counted(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    renamed_encoder: BiEncoder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    groups = {"dense": shards["dense-3"]}
    dirs = {"dense": indexes["dense-3"]}
    async with stack(groups, dirs) as plain:
        by_shards = await _search_all(plain, "dense")
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline"):
        async with stack(
            groups, dirs, query_encoder=renamed_encoder, metrics=GatewayMetrics(registry)
        ) as mismatched:
            answers = await _search_all(mismatched, "dense")
    for a, b in zip(by_shards, answers, strict=True):
        assert _ranking(a) == _ranking(b)
        assert not b.metadata.coverage.degraded and b.metadata.coverage.shards_answered == 3
        # The shards embedded the text themselves after refusing the vector.
        assert {t.component for t in b.metadata.timings if t.stage == "embed" and t.component} == {
            f"dense/shard-{i}" for i in range(3)
        }
    fallbacks = registry.get_sample_value("search_gateway_query_embedding_fallbacks_total")
    assert fallbacks == 3 * len(QUERIES)
    warnings = [r for r in caplog.records if "refused the gateway's query embedding" in r.getMessage()]
    assert len(warnings) == 3, "one warning per shard, not per request"
    assert "renamed-minilm" in warnings[0].getMessage()


async def test_in_process_pipeline_takes_the_same_encoder(
    shards: dict[str, list[Retriever]], encoder: BiEncoder
) -> None:
    variant = load_variants(None, VariantBounds()).get("dense")
    plain = SearchPipeline({"dense": shards["dense-3"]})
    once = SearchPipeline({"dense": shards["dense-3"]}, query_encoder=encoder)
    for text in QUERIES:
        query = SearchQuery(text, 10, variant, variant.retrieval_depth, 0)
        a, b = await plain.search(query), await once.search(query)
        assert [(h.document.doc_id, round(h.score, 5)) for h in a.hits] == [
            (h.document.doc_id, round(h.score, 5)) for h in b.hits
        ]
        assert [t.component for t in b.timings if t.stage == "embed"] == [""]
        assert b.embedding_fallbacks == 0


async def test_pseudo_relevance_feedback_over_grpc_ranks_as_in_process_whatever_the_sharding(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    encoder: BiEncoder,
) -> None:
    variant = load_variants(None, VariantBounds()).get("dense-prf")
    single = SearchPipeline({"dense": shards["dense-1"]}, query_encoder=encoder)
    registry = CollectorRegistry()
    async with stack(
        {"dense": shards["dense-3"]},
        {"dense": indexes["dense-3"]},
        query_encoder=encoder,
        metrics=GatewayMetrics(registry),
    ) as served:
        answers = await _search_all(served, "dense-prf")
    for text, answer in zip(QUERIES, answers, strict=True):
        expected = await single.search(SearchQuery(text, 10, variant, variant.retrieval_depth, 0))
        # The feedback documents are the global top 2, so 3 shards refine the query as 1 shard does.
        assert _ranking(answer) == [(h.document.doc_id, round(h.score, 5)) for h in expected.hits]
        assert not answer.metadata.coverage.degraded and answer.metadata.coverage.shards_answered == 3
        assert ("feedback", "") in {(t.stage, t.component) for t in answer.metadata.timings}
    assert _stage_count(registry, "feedback", "dense-prf") == len(QUERIES)
