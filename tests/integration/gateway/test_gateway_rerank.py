"""The rerank stage end to end: gateway → real reranker gRPC server (ONNX cross-encoder) and its fallback.

The cross-encoder is the training exporter's small untrained artifact (the reranker tests' fixture recipe,
cached under var/test-artifacts/): its scores are arbitrary but deterministic, which is all the order checks
below need.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest
from search.v1 import search_service_pb2

from model_runtimes.cross_encoder.manifest import read_cross_encoder_manifest
from operations.redis_server import RedisServer
from reranker_service.bootstrap import build_core
from reranker_service.config import Settings as RerankerSettings
from reranker_service.server import build_server as build_reranker_server
from search_common.artifacts import ArtifactError
from search_common.ports import Retriever
from tests.fusion_support import fusion_artifact
from tests.late_interaction_support import late_interaction_artifact

StackFactory = Callable[..., AbstractAsyncContextManager[Any]]
REPO_ROOT = Path(__file__).resolve().parents[3]
ARTIFACT = REPO_ROOT / "var" / "test-artifacts" / "reranker-cross-encoder" / "v1"
VARIANTS = """
default: dense
variants:
  - {name: dense, weight: 1, first_stage: dense, retrieval_depth: 20}
  - {name: ce, weight: 0, first_stage: dense, retrieval_depth: 20, reranker: cross-encoder-minilm,
     rerank_depth: 5}
"""


@pytest.fixture(scope="session")
def cross_encoder() -> Path:
    with contextlib.suppress(ArtifactError):
        read_cross_encoder_manifest(ARTIFACT)
        return ARTIFACT
    from training.cross_encoder.export import main as export_main

    export_main(
        ["--untrained", "--out", str(ARTIFACT.parent), "--version", "v1", "--layers", "1", "--seed", "13",
         "--max-length", "128", "--no-quantize"]
    )  # fmt: skip
    return ARTIFACT


@contextlib.asynccontextmanager
async def reranker_server(
    artifact: Path, redis_url: str | None = None, backend: str = "auto"
) -> AsyncIterator[tuple[str, grpc.aio.Server]]:
    cache: dict[str, Any] = {"cache": "redis", "redis_url": redis_url} if redis_url else {"cache": "none"}
    settings = RerankerSettings(
        backend=backend,  # type: ignore[arg-type]
        artifact_dir=artifact,
        intra_op_threads=1,
        **cache,
    )
    built = build_reranker_server(settings)
    await built.server.start()
    core = build_core(settings)
    await built.mark_ready(core)
    try:
        yield f"127.0.0.1:{built.port}", built.server
    finally:
        await built.server.stop(0)
        await core.close()


def _reranked_stack(
    stack: StackFactory,
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    reranker: str | None,
    tmp: Path,
    *,
    variants: str = VARIANTS,
    shard_set: str = "dense-3",
    **gateway_options: object,
) -> AbstractAsyncContextManager[Any]:
    """A gateway over one set of dense shards with the given variants file, reranking at `reranker`."""
    variants_file = tmp / "variants.yaml"
    variants_file.write_text(variants)
    return stack(
        {"dense": shards[shard_set]},
        {"dense": indexes[shard_set]},
        reranker=reranker,
        variants=variants_file,
        **gateway_options,
    )


def _request(top_k: int, **overrides: int) -> search_service_pb2.SearchRequest:
    return search_service_pb2.SearchRequest(
        query="compress a file with gzip",
        top_k=top_k,
        variant="ce",
        overrides=search_service_pb2.SearchOverrides(**overrides),
    )


async def test_a_redis_outage_is_in_the_answer_which_stays_reranked(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    cross_encoder: Path,
    tmp_path: Path,
) -> None:
    with RedisServer() as redis:
        async with (
            reranker_server(cross_encoder, redis.url) as (address, _),
            _reranked_stack(stack, shards, indexes, address, tmp_path) as running,
        ):
            cached = await running.stub.Search(_request(10), timeout=30)
            assert not cached.metadata.coverage.degraded
            redis.kill()
            bypassed = await running.stub.Search(_request(10), timeout=30)
    assert [h.doc_id for h in bypassed.hits] == [h.doc_id for h in cached.hits]
    assert all(h.HasField("rerank_score") for h in bypassed.hits[:5])
    assert bypassed.metadata.coverage.degraded
    (degradation,) = bypassed.metadata.coverage.degradations
    assert degradation.reason == search_service_pb2.DEGRADATION_REASON_CACHE_BYPASSED
    assert (degradation.stage, degradation.component) == (search_service_pb2.STAGE_RERANK, "score-cache")


async def test_rerank_then_fallback_when_the_reranker_goes_away(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    cross_encoder: Path,
    tmp_path: Path,
) -> None:
    async with (
        reranker_server(cross_encoder) as (address, server),
        _reranked_stack(stack, shards, indexes, address, tmp_path) as running,
    ):
        plain = await running.stub.Search(
            search_service_pb2.SearchRequest(query="compress a file with gzip", top_k=10, variant="dense")
        )
        reranked = await running.stub.Search(_request(10), timeout=30)

        # Reranked head of 5 ordered by rerank score, then the first stage's ranks 6..10 unchanged.
        head = reranked.hits[:5]
        assert all(h.HasField("rerank_score") for h in head)
        assert [h.rerank_score for h in head] == sorted((h.rerank_score for h in head), reverse=True)
        assert {h.doc_id for h in head} == {h.doc_id for h in plain.hits[:5]}
        assert [h.doc_id for h in reranked.hits[5:]] == [h.doc_id for h in plain.hits[5:]]
        assert all(not h.HasField("rerank_score") for h in reranked.hits[5:])
        assert not reranked.metadata.coverage.degraded
        assert ("reranker", "cross-encoder-minilm", "v1") in {
            (v.component, v.name, v.version) for v in reranked.metadata.versions
        }
        assert "rerank" in {t.stage for t in reranked.metadata.timings}

        # rerank_depth 0 disables the stage for one request.
        skipped = await running.stub.Search(_request(10, rerank_depth=0), timeout=30)
        assert [h.doc_id for h in skipped.hits] == [h.doc_id for h in plain.hits]

        await server.stop(0)
        fallback = await running.stub.Search(_request(10), timeout=30)

    assert [h.doc_id for h in fallback.hits] == [h.doc_id for h in plain.hits]
    assert len(fallback.hits) == 10
    assert all(not h.HasField("rerank_score") for h in fallback.hits)
    coverage = fallback.metadata.coverage
    assert coverage.degraded and coverage.shards_answered == coverage.shards_queried == 3
    (degradation,) = coverage.degradations
    assert degradation.stage == search_service_pb2.STAGE_RERANK
    assert degradation.component == "reranker"
    assert degradation.reason == search_service_pb2.DEGRADATION_REASON_UNAVAILABLE


PINNED = """
variants:
  - {name: dense, weight: 1, first_stage: dense, retrieval_depth: 20}
  - {name: ce-v1, weight: 0, first_stage: dense, retrieval_depth: 20, reranker: cross-encoder-minilm,
     reranker_version: v1, rerank_depth: 5}
  - {name: ce-v9, weight: 0, first_stage: dense, retrieval_depth: 20, reranker: cross-encoder-minilm,
     reranker_version: v9, rerank_depth: 5}
"""


async def test_a_variant_pinned_to_another_model_version_is_not_reranked_by_this_one(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    cross_encoder: Path,
    tmp_path: Path,
) -> None:
    async with (
        reranker_server(cross_encoder) as (address, _),
        _reranked_stack(
            stack, shards, indexes, address, tmp_path, variants=PINNED, shard_set="dense-1"
        ) as running,
    ):
        query = "compress a file with gzip"
        pinned = await running.stub.Search(
            search_service_pb2.SearchRequest(query=query, top_k=5, variant="ce-v1"), timeout=30
        )
        other = await running.stub.Search(
            search_service_pb2.SearchRequest(query=query, top_k=5, variant="ce-v9"), timeout=30
        )
    assert not pinned.metadata.coverage.degraded
    assert all(h.HasField("rerank_score") for h in pinned.hits)
    assert all(not h.HasField("rerank_score") for h in other.hits)
    (degradation,) = other.metadata.coverage.degradations
    assert degradation.stage == search_service_pb2.STAGE_RERANK
    assert "version 'v9' is not served here" in degradation.detail


LEARNED = """
variants:
  - {name: dense, weight: 1, first_stage: dense, retrieval_depth: 20}
  - {name: lf, weight: 0, first_stage: dense, retrieval_depth: 20, reranker: cross-encoder-minilm,
     rerank_depth: 5, fusion: learned, fusion_model: learned-test}
"""


async def test_a_learned_fusion_variant_is_ordered_by_the_model_the_gateway_loaded(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    cross_encoder: Path,
    tmp_path: Path,
) -> None:
    # The fitted rule puts the reranker's favourite first, whatever its first-stage rank.
    fusion = fusion_artifact(tmp_path / "fusion", first_stage="dense")
    query = "compress a file with gzip"
    async with (
        reranker_server(cross_encoder) as (address, _),
        _reranked_stack(
            stack, shards, indexes, address, tmp_path, variants=LEARNED, fusion_models=(fusion,)
        ) as running,
    ):
        plain = await running.stub.Search(search_service_pb2.SearchRequest(query=query, top_k=10))
        fused = await running.stub.Search(
            search_service_pb2.SearchRequest(query=query, top_k=10, variant="lf"), timeout=30
        )
    head = fused.hits[:5]
    assert head[0].rerank_score == max(h.rerank_score for h in head)
    assert [h.score for h in head] == sorted((h.score for h in head), reverse=True)  # the model's scores
    assert [h.score for h in head] != [h.rerank_score for h in head]
    assert {h.doc_id for h in head} == {h.doc_id for h in plain.hits[:5]}
    assert [h.doc_id for h in fused.hits[5:]] == [h.doc_id for h in plain.hits[5:]]
    assert all(h.HasField("rerank_score") for h in fused.hits[:5])
    assert not fused.metadata.coverage.degraded
    assert ("fusion", "learned-test", fusion.name) in {
        (v.component, v.name, v.version) for v in fused.metadata.versions
    }
    assert "fuse" in {t.stage for t in fused.metadata.timings}


async def test_a_gateway_without_the_fusion_model_refuses_its_variant_by_name(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    cross_encoder: Path,
    tmp_path: Path,
) -> None:
    async with (
        reranker_server(cross_encoder) as (address, _),
        _reranked_stack(
            stack, shards, indexes, address, tmp_path, variants=LEARNED, shard_set="dense-1"
        ) as running,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await running.stub.Search(search_service_pb2.SearchRequest(query="gzip", top_k=5, variant="lf"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fusion model 'learned-test', not loaded" in str(refused.value.details())


# The same, plus a ColBERT variant and one whose model no reranker here serves.
ROUTED_VARIANTS = (
    VARIANTS
    + """  - {name: colbert, weight: 0, first_stage: dense, retrieval_depth: 20, reranker: colbert-untrained,
     rerank_depth: 5}
  - {name: poly, weight: 0, first_stage: dense, retrieval_depth: 20, reranker: poly-encoder, rerank_depth: 5}
"""
)


async def test_rerankers_are_routed_by_the_model_each_variant_names(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    cross_encoder: Path,
    tmp_path: Path,
) -> None:
    """A cross-encoder (the default reranker) and a ColBERT reranker (routed) behind one gateway: each
    variant reaches its own model."""
    async with (
        reranker_server(cross_encoder) as (ce_address, _),
        reranker_server(late_interaction_artifact("v1"), backend="late-interaction") as (li_address, _),
        _reranked_stack(
            stack,
            shards,
            indexes,
            ce_address,
            tmp_path,
            variants=ROUTED_VARIANTS,
            reranker_routes={"colbert-untrained": li_address},
        ) as running,
    ):
        served = {}
        for variant in ("ce", "colbert"):
            reply = await running.stub.Search(
                search_service_pb2.SearchRequest(
                    query="compress a file with gzip", top_k=10, variant=variant
                ),
                timeout=30,
            )
            assert not reply.metadata.coverage.degraded
            assert all(h.HasField("rerank_score") for h in reply.hits[:5])
            served[variant] = {v.name for v in reply.metadata.versions if v.component == "reranker"}
        assert served == {"ce": {"cross-encoder-minilm"}, "colbert": {"colbert-untrained"}}


async def test_with_routes_only_a_variant_of_an_unrouted_model_is_refused(
    shards: dict[str, list[Retriever]],
    indexes: dict[str, Path],
    stack: StackFactory,
    tmp_path: Path,
) -> None:
    async with (
        reranker_server(late_interaction_artifact("v1"), backend="late-interaction") as (li_address, _),
        _reranked_stack(
            stack,
            shards,
            indexes,
            None,  # no default reranker: only the routed model
            tmp_path,
            variants=ROUTED_VARIANTS,
            reranker_routes={"colbert-untrained": li_address},
        ) as running,
    ):
        reply = await running.stub.Search(
            search_service_pb2.SearchRequest(query="gzip", top_k=5, variant="colbert"), timeout=30
        )
        assert all(h.HasField("rerank_score") for h in reply.hits)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await running.stub.Search(
                search_service_pb2.SearchRequest(query="gzip", top_k=5, variant="ce"), timeout=30
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cross-encoder-minilm" in (refused.value.details() or "")
