"""The cross-encoder's torch engine on a GPU: in process, and in a tritonserver whose model runs on the GPU.

Skipped where PyTorch sees no CUDA device (CI has none). Run on a GPU machine:
    python -m pytest tests/gpu -q
SEARCH_TEST_CROSS_ENCODER names an artifact with a torch program to use instead of the test one, for a GPU
host without the packaged MiniLM weights that the test artifact is exported from.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from model_runtimes.cross_encoder.manifest import choose_engine, read_cross_encoder_manifest
from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from operations.triton_repository import assemble_model_repository
from operations.tritonserver import TritonServer
from reranker_service.backends.triton import TritonScorer
from tests.cross_encoder_support import cross_encoder_artifact, triton_installation_or_skip

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA device")

QUERY = "does aspirin prevent heart attacks"
TEXTS = [f"document {i}: " + "aspirin and the heart " * (i % 9) for i in range(40)]


@pytest.fixture(scope="module")
def artifact() -> Path:
    named = os.environ.get("SEARCH_TEST_CROSS_ENCODER")
    return Path(named) if named else cross_encoder_artifact("v1")


@pytest.fixture(scope="module")
def on_gpu(artifact: Path) -> CrossEncoderRuntime:
    return CrossEncoderRuntime.load(artifact, engine="auto", device="cuda")


def test_auto_runs_the_program_on_the_gpu_and_scores_as_on_the_cpu(
    artifact: Path, on_gpu: CrossEncoderRuntime
) -> None:
    assert on_gpu.engine == "torch" and on_gpu.description.endswith(" on cuda")
    on_cpu = CrossEncoderRuntime.load(artifact, engine="torch")
    assert choose_engine("auto", read_cross_encoder_manifest(artifact, verify=False), "cuda:0") == "torch"
    queries = [QUERY] * len(TEXTS)
    cpu_scores = on_cpu.score_pairs(queries, TEXTS, batch_size=8)
    gpu_scores = on_gpu.score_pairs(queries, TEXTS, batch_size=8)
    # bfloat16 on both, with different kernels: equal to within bf16 rounding, in the same order.
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=0.1)
    assert np.corrcoef(gpu_scores, cpu_scores)[0, 1] > 0.99
    # one pass of every pair, as a GPU instance scores a dynamic batch: the same scores
    np.testing.assert_allclose(on_gpu.score_pairs(queries, TEXTS, batch_size=64), gpu_scores, atol=0.05)


def test_a_pairs_score_on_the_gpu_does_not_depend_on_its_batch(on_gpu: CrossEncoderRuntime) -> None:
    # Bucketed passes (auto on a GPU): fixed rows and length buckets, so the kernels and their sums are fixed.
    assert on_gpu.pass_shape == "bucketed"
    alone = np.array([on_gpu.score(QUERY, [text], batch_size=16)[0] for text in TEXTS])
    for depth in (3, 17, len(TEXTS)):
        scores = on_gpu.score(QUERY, TEXTS[:depth], batch_size=16)
        np.testing.assert_allclose(scores, alone[:depth], atol=1e-3)
    mixed = [5, 0, 33, 12, 12, 39, 1]
    queries = [QUERY, "other query"] * 4
    others = on_gpu.score_pairs(queries[: len(mixed)], [TEXTS[i] for i in mixed], batch_size=16)
    np.testing.assert_allclose(others[::2], alone[mixed[::2]], atol=1e-3)


def test_concurrent_callers_share_the_gpu_program(on_gpu: CrossEncoderRuntime) -> None:
    expected = on_gpu.score(QUERY, TEXTS, batch_size=16)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: on_gpu.score(QUERY, TEXTS, batch_size=16), range(16)))
    for scores in results:
        np.testing.assert_allclose(scores, expected, atol=1e-3)


async def test_tritonserver_scores_on_the_gpu_as_in_process(
    artifact: Path, on_gpu: CrossEncoderRuntime, tmp_path: Path
) -> None:
    installation = triton_installation_or_skip()
    repository = assemble_model_repository(
        tmp_path / "repo",
        artifact_root=artifact.parent,
        artifact_version=artifact.name,
        device="cuda",  # from a KIND_CPU instance: see config.pbtxt's DEVICE
        score_batch_size=64,
    )
    with TritonServer(
        repository, installation=installation, work_dir=tmp_path / "run", startup_timeout=300.0
    ) as server:
        scorer = TritonScorer(server.grpc_url, timeout_seconds=60.0)
        await scorer.start()
        try:
            served = await scorer.score(QUERY, TEXTS)
        finally:
            await scorer.close()
    np.testing.assert_allclose(served, on_gpu.score(QUERY, TEXTS, batch_size=64), atol=0.05)
