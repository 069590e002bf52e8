"""A pair's score is the same however it is batched: alone, at any rerank depth, beside any other pairs, with
any number of concurrent callers, on every engine and pass shape the runtime serves (real artifacts).

The test model's scores span only about +-0.2 logits, so the tests hold the engines to 1e-5, far inside the
1e-3 the reranker promises; the control tests show that the old padded passes miss even that on the engines
where batching leaked into scores (per-tensor int8 and bfloat16).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_runtimes.cross_encoder.contract import FloatArray
from model_runtimes.cross_encoder.passes import Pass
from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from tests.cross_encoder_support import SAMPLE_TEXTS, quantized_cross_encoder_artifact

TOLERANCE = 1e-5
QUERIES = ["does aspirin help the heart", "vitamin d in winter", "cell energy and ATP", "why " * 40]
TEXTS = [
    *SAMPLE_TEXTS,
    "The mitochondria is the powerhouse of the cell; ATP synthesis happens there. " * 3,
    "Statins lower cholesterol, and with it the risk of a second heart attack.",
]
PAIRS = [(q, t) for q in QUERIES for t in TEXTS]
# (engine, artifact, pass shape): every engine the CPU runs, with each shape it allows.
CASES = [
    ("onnx", "int8", "single"),
    ("onnx", "fp32", "single"),
    ("onnx", "fp32", "bucketed"),
    ("torch", "fp32", "single"),  # the artifact's bfloat16 program
    ("torch", "fp32", "bucketed"),
]


@pytest.fixture(scope="module")
def artifacts(artifact_v1: Path) -> dict[str, Path]:
    return {"fp32": artifact_v1, "int8": quantized_cross_encoder_artifact()}


@pytest.fixture(scope="module", params=CASES, ids=["-".join(case) for case in CASES])
def runtime(request: pytest.FixtureRequest, artifacts: dict[str, Path]) -> Iterator[CrossEncoderRuntime]:
    engine, artifact, shape = request.param
    loaded = CrossEncoderRuntime.load(artifacts[artifact], engine=engine, pass_shape=shape, batch_workers=2)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def alone(runtime: CrossEncoderRuntime) -> FloatArray:
    """Each pair's score when it is the only pair of its call."""
    return np.array([runtime.score_pairs([q], [t])[0] for q, t in PAIRS], dtype=np.float32)


def _score(runtime: CrossEncoderRuntime, picked: list[int], batch_size: int = 32) -> FloatArray:
    return runtime.score_pairs(
        [PAIRS[i][0] for i in picked], [PAIRS[i][1] for i in picked], batch_size=batch_size
    )


def test_scores_do_not_depend_on_the_rerank_depth(runtime: CrossEncoderRuntime, alone: FloatArray) -> None:
    for query_index, query in enumerate(QUERIES):
        first = query_index * len(TEXTS)
        for depth in (1, 3, len(TEXTS)):
            scores = runtime.score(query, TEXTS[:depth])
            np.testing.assert_allclose(scores, alone[first : first + depth], rtol=0, atol=TOLERANCE)


def test_scores_do_not_depend_on_neighbours_order_or_batch_size(
    runtime: CrossEncoderRuntime, alone: FloatArray
) -> None:
    shuffled = list(range(len(PAIRS)))
    random.Random(7).shuffle(shuffled)
    for batch_size in (1, 4, 16, 64):
        np.testing.assert_allclose(
            _score(runtime, shuffled, batch_size), alone[shuffled], rtol=0, atol=TOLERANCE
        )


def test_concurrent_callers_get_the_scores_a_lone_caller_gets(
    runtime: CrossEncoderRuntime, alone: FloatArray
) -> None:
    rng = random.Random(11)
    calls = [rng.sample(range(len(PAIRS)), rng.randint(1, len(PAIRS))) for _ in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda picked: _score(runtime, picked, batch_size=8), calls))
    for picked, scores in zip(calls, results, strict=True):
        np.testing.assert_allclose(scores, alone[picked], rtol=0, atol=TOLERANCE)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picked=st.lists(st.integers(min_value=0, max_value=len(PAIRS) - 1), min_size=1, max_size=40),
    batch_size=st.integers(min_value=1, max_value=24),
    max_length=st.sampled_from([None, 64]),
)
def test_any_batch_composition_scores_each_pair_as_alone(
    runtime: CrossEncoderRuntime,
    alone: FloatArray,
    picked: list[int],
    batch_size: int,
    max_length: int | None,
) -> None:
    # Repeats allowed: the same pair twice in one call is two rows that must agree with each other too.
    queries, texts = [PAIRS[i][0] for i in picked], [PAIRS[i][1] for i in picked]
    scores = runtime.score_pairs(queries, texts, max_length=max_length, batch_size=batch_size)
    if max_length is None:
        expected = alone[picked]
    else:
        pairs = zip(queries, texts, strict=True)
        expected = np.array([runtime.score_pairs([q], [t], max_length=max_length)[0] for q, t in pairs])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("engine", "artifact"), [("onnx", "int8"), ("torch", "fp32")])
def test_control_one_padded_pass_did_move_scores(
    engine: str, artifact: str, artifacts: dict[str, Path]
) -> None:
    """The batching these tests rule out is real: every pair in one pass padded to the longest (the old
    runtime's passes) moves scores by more than TOLERANCE on per-tensor int8 and on bfloat16."""
    runtime = CrossEncoderRuntime.load(artifacts[artifact], engine=engine, batch_workers=1)
    queries, texts = [q for q, _ in PAIRS], [t for _, t in PAIRS]
    encodings = runtime._encode(queries, texts, runtime.max_length)
    width = max(len(e.ids) for e in encodings)
    padded = runtime._run(Pass(tuple(range(len(PAIRS))), width, len(PAIRS)), encodings)
    assert np.abs(padded - runtime.score_pairs(queries, texts)).max() > TOLERANCE


def test_bucketed_passes_are_refused_for_per_tensor_int8(artifacts: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="quantises activations per tensor"):
        CrossEncoderRuntime.load(artifacts["int8"], engine="onnx", pass_shape="bucketed")
