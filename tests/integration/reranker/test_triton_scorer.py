"""TritonScorer against a real tritonserver serving triton_models/cross_encoder over the v1 artifact."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import aio as triton_aio

from operations.launch import LocalServiceError
from operations.triton_repository import assemble_model_repository
from operations.tritonserver import TritonInstallation, TritonServer
from reranker_service.backends.embedded import EmbeddedScorer
from reranker_service.backends.triton import TritonScorer, infer_pairs
from reranker_service.cache.lru import LruScoreCache
from reranker_service.scoring import RerankCore
from search_common import triton_contract as tc
from search_common.documents import Document
from search_common.errors import InvalidArgument, ResourceExhausted, Unavailable

QUERY = "does aspirin prevent heart attacks"
TEXTS = [f"document {i}: " + "aspirin and the heart " * (i % 7) for i in range(150)]


@pytest.fixture
async def triton_scorer(triton_server: TritonServer) -> AsyncIterator[TritonScorer]:
    scorer = TritonScorer(triton_server.grpc_url, timeout_seconds=30.0)
    await scorer.start()
    yield scorer
    await scorer.close()


@pytest.fixture
async def onnx_scorer(artifact_v1: Path) -> AsyncIterator[EmbeddedScorer]:
    scorer = EmbeddedScorer.load(artifact_v1, intra_op_threads=1)
    yield scorer
    await scorer.close()


async def test_identity_and_batch_limit_come_from_the_model_config(triton_scorer: TritonScorer) -> None:
    assert (triton_scorer.model_name, triton_scorer.model_version) == ("cross-encoder-minilm", "v1")
    assert triton_scorer.max_length == 128
    assert triton_scorer.max_batch_size == 64
    # The engine the model resolved, asked of the model itself (the config's ENGINE may say "auto").
    assert triton_scorer.engine == "triton-onnx"


async def test_scores_match_the_in_process_scorer(
    triton_scorer: TritonScorer, onnx_scorer: EmbeddedScorer
) -> None:
    # 150 documents: three chunks of at most 64 pairs, sent concurrently.
    served = await triton_scorer.score(QUERY, TEXTS)
    local = await onnx_scorer.score(QUERY, TEXTS)
    assert served.dtype == np.float32 and served.shape == (150,)
    np.testing.assert_allclose(served, local, atol=1e-4)
    short_served = await triton_scorer.score(QUERY, TEXTS[:20], max_length=16)
    short_local = await onnx_scorer.score(QUERY, TEXTS[:20], max_length=16)
    np.testing.assert_allclose(short_served, short_local, atol=1e-4)
    assert not np.allclose(short_served, served[:20], atol=1e-6)  # the token budget reached the model


async def _model_stats(url: str) -> tuple[int, int, int]:
    """(pairs inferred, model executions, requests succeeded) so far, from Triton's statistics."""
    client = triton_aio.InferenceServerClient(url)
    try:
        stats: Any = await client.get_inference_statistics(tc.MODEL_NAME, as_json=True)
    finally:
        await client.close()
    model = stats["model_stats"][0]
    success = int(model["inference_stats"]["success"].get("count", 0))
    return int(model.get("inference_count", 0)), int(model.get("execution_count", 0)), success


async def test_concurrent_requests_are_batched_and_answered_separately(
    triton_server: TritonServer, triton_scorer: TritonScorer, onnx_scorer: EmbeddedScorer
) -> None:
    pairs_before, executions_before, requests_before = await _model_stats(triton_server.grpc_url)
    queries = [f"query number {i}" for i in range(16)]
    served = await asyncio.gather(*(triton_scorer.score(q, TEXTS[i : i + 4]) for i, q in enumerate(queries)))
    for i, q in enumerate(queries):
        np.testing.assert_allclose(served[i], await onnx_scorer.score(q, TEXTS[i : i + 4]), atol=1e-4)
    pairs, executions, requests = await _model_stats(triton_server.grpc_url)
    assert pairs - pairs_before == 64 and requests - requests_before == 16
    # How many executions the dynamic batcher needed depends on timing (16 when nothing overlapped; 2 here
    # typically); it is logged, not asserted.
    assert 1 <= executions - executions_before <= 16
    logging.getLogger(__name__).info("16 requests ran in %d executions", executions - executions_before)


async def test_bad_requests_get_clear_errors_and_spare_the_rest_of_the_batch(
    triton_server: TritonServer,
) -> None:
    client = triton_aio.InferenceServerClient(triton_server.grpc_url)
    try:
        over = ["text"] * 65
        with pytest.raises(InvalidArgument, match="batch"):
            await infer_pairs(client, tc.MODEL_NAME, ["q"] * 65, over, timeout=30)
        good, empty_query = await asyncio.gather(
            infer_pairs(client, tc.MODEL_NAME, ["q", "q"], ["a", "b"], timeout=30),
            infer_pairs(client, tc.MODEL_NAME, [" "], ["a"], timeout=30),
            return_exceptions=True,
        )
        assert isinstance(good, np.ndarray) and good.shape == (2,)
        assert isinstance(empty_query, InvalidArgument)
        assert "QUERY must not be empty" in str(empty_query)
        with pytest.raises(InvalidArgument, match="max_length must be an integer >= 8"):
            await infer_pairs(client, tc.MODEL_NAME, ["q"], ["a"], max_length=3, timeout=30)
    finally:
        await client.close()


async def test_requests_past_max_pending_are_refused_not_queued(triton_server: TritonServer) -> None:
    scorer = TritonScorer(triton_server.grpc_url, timeout_seconds=30.0, max_pending=1)
    await scorer.start()
    try:
        first, second = await asyncio.gather(
            scorer.score(QUERY, TEXTS[:40]), scorer.score(QUERY, TEXTS[:8]), return_exceptions=True
        )
        assert isinstance(first, np.ndarray) and first.shape == (40,)
        assert isinstance(second, ResourceExhausted) and "busy" in str(second)
        assert (await scorer.score(QUERY, TEXTS[:8])).shape == (8,)  # the place was given back
    finally:
        await scorer.close()


async def test_an_unreachable_server_is_unavailable() -> None:
    from operations.launch import free_port

    scorer = TritonScorer(f"127.0.0.1:{free_port()}", timeout_seconds=2.0)
    with pytest.raises(Unavailable):
        await scorer.start()


async def test_a_model_version_swap_on_triton_misses_the_cache(
    triton_installation: TritonInstallation, artifact_v1: Path, artifact_v2: Path, tmp_path: Path
) -> None:
    """Triton reloads the model on v2 behind a running reranker: new keys, no v1 score served."""
    repository = assemble_model_repository(
        tmp_path / "repo", artifact_root=artifact_v1.parent, artifact_version="v1", intra_op_threads=1
    )
    explicit = ("--model-control-mode=explicit", f"--load-model={tc.MODEL_NAME}")
    with TritonServer(
        repository, installation=triton_installation, work_dir=tmp_path / "run", extra_args=explicit
    ) as server:
        scorer = TritonScorer(server.grpc_url, timeout_seconds=30.0, identity_ttl_seconds=0.0)
        core = RerankCore(scorer, LruScoreCache(1000))
        documents = [Document(f"d{i}", "", text) for i, text in enumerate(TEXTS[:6])]
        client = triton_aio.InferenceServerClient(server.grpc_url)
        try:
            old = await core.rerank(QUERY, documents)
            assert (await core.rerank(QUERY, documents)).cache_hits == len(documents)
            config: Any = (await client.get_model_config(tc.MODEL_NAME, as_json=True))["config"]
            config["parameters"][tc.PARAM_ARTIFACT_VERSION]["string_value"] = "v2"
            await client.load_model(tc.MODEL_NAME, config=json.dumps(config))
            new = await core.rerank(QUERY, documents)
            assert (old.model_version, new.model_version) == ("v1", "v2")
            assert new.cache_hits == 0
            assert not np.allclose(new.scores, old.scores)
        finally:
            await client.close()
            await core.close()


async def test_the_torch_engine_serves_the_bfloat16_program(
    triton_installation: TritonInstallation,
    artifact_v1: Path,
    tmp_path: Path,
    onnx_scorer: EmbeddedScorer,
) -> None:
    repository = assemble_model_repository(
        tmp_path / "repo", artifact_root=artifact_v1.parent, artifact_version="v1", engine="torch"
    )
    local = EmbeddedScorer.load(artifact_v1, engine="torch", intra_op_threads=1)
    with TritonServer(repository, installation=triton_installation, work_dir=tmp_path / "run") as server:
        scorer = TritonScorer(server.grpc_url, timeout_seconds=30.0)
        await scorer.start()
        try:
            served = await scorer.score(QUERY, TEXTS)
            expected = await local.score(QUERY, TEXTS)
            engine = scorer.engine
        finally:
            await scorer.close()
            await local.close()
    # Its scores round differently from the ONNX model's, so its cache keys differ too.
    assert engine == "triton-torch"
    # bfloat16 in both, batched differently: equal to the last bits of bf16's 8-bit mantissa ...
    np.testing.assert_allclose(served, expected, atol=3e-3)
    # ... and not the fp32 ONNX graph, which agrees with itself to 1e-5 whatever the batching.
    assert float(np.abs(served - await onnx_scorer.score(QUERY, TEXTS)).max()) > 1e-4


def test_a_repository_names_a_known_engine(artifact_v1: Path, tmp_path: Path) -> None:
    with pytest.raises(LocalServiceError, match="engine must be one of auto, onnx, torch"):
        assemble_model_repository(
            tmp_path / "repo", artifact_root=artifact_v1.parent, artifact_version="v1", engine="tensorrt"
        )
    with pytest.raises(LocalServiceError, match="device must be cpu, cuda or cuda:N, got 'tpu'"):
        assemble_model_repository(
            tmp_path / "repo", artifact_root=artifact_v1.parent, artifact_version="v1", device="tpu"
        )
    config = (
        assemble_model_repository(
            tmp_path / "repo", artifact_root=artifact_v1.parent, artifact_version="v1", engine="torch"
        )
        / tc.MODEL_NAME
        / "config.pbtxt"
    )
    assert 'key: "ENGINE"\n  value: { string_value: "torch" }' in config.read_text()
