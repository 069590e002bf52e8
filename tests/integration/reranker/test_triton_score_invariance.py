"""Through a real tritonserver, a pair's score does not depend on what other clients asked at the same time.

The server hosts the int8 test artifact (per-tensor dynamic activations: the engine whose scores used to move
with their batch) behind dynamic batching; concurrent clients send overlapping requests of different depths,
which the batcher merges into shared executions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from operations.tritonserver import TritonInstallation, TritonServer
from reranker_service.backends.triton import TritonScorer
from tests.cross_encoder_support import quantized_cross_encoder_artifact, serving_on_triton

TOLERANCE = 1e-5  # see test_score_invariance: the test model's scores span about +-0.2 logits
QUERIES = [f"does aspirin number {i} help the heart" for i in range(8)]
TEXTS = [f"document {i}: " + "aspirin and the heart " * (i % 9) + "statins " * (i % 4) for i in range(40)]


@pytest.fixture(scope="module")
def int8_artifact() -> Path:
    return quantized_cross_encoder_artifact()


@pytest.fixture(scope="module")
def int8_triton(
    triton_installation: TritonInstallation, int8_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    with serving_on_triton(
        triton_installation, int8_artifact, tmp_path_factory.mktemp("triton-int8")
    ) as server:
        yield server


@pytest.fixture
async def scorer(int8_triton: TritonServer) -> AsyncIterator[TritonScorer]:
    client = TritonScorer(int8_triton.grpc_url, timeout_seconds=60.0)
    await client.start()
    yield client
    await client.close()


async def test_concurrent_clients_get_each_pair_scored_as_alone(
    scorer: TritonScorer, int8_artifact: Path
) -> None:
    local = CrossEncoderRuntime.load(int8_artifact, engine="onnx", batch_workers=1)
    alone = {q: np.array([local.score(q, [t])[0] for t in TEXTS]) for q in QUERIES}
    # Every query at several depths, all in flight at once: the dynamic batcher mixes their pairs.
    depths = [5, 17, 40]
    calls = [(q, d) for q in QUERIES for d in depths]
    served = await asyncio.gather(*(scorer.score(q, TEXTS[:d]) for q, d in calls))
    for (query, depth), scores in zip(calls, served, strict=True):
        np.testing.assert_allclose(scores, alone[query][:depth], rtol=0, atol=TOLERANCE)
    one_at_a_time = [(await scorer.score(QUERIES[0], [text]))[0] for text in TEXTS[:5]]
    np.testing.assert_allclose(one_at_a_time, alone[QUERIES[0]][:5], rtol=0, atol=TOLERANCE)
    logging.getLogger(__name__).info("max |served - alone| %.2e", max(
        float(np.abs(s - alone[q][:d]).max()) for (q, d), s in zip(calls, served, strict=True)
    ))  # fmt: skip
