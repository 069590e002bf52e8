"""CrossEncoderRuntime over a real exported artifact: ordering, batching, truncation, validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from model_runtimes.stopping import ScoringStopped
from search_common.artifacts import ArtifactError
from tests.cross_encoder_support import SAMPLE_TEXTS

TEXTS = SAMPLE_TEXTS


@pytest.fixture(scope="module")
def runtime(artifact_v1: Path) -> CrossEncoderRuntime:
    return CrossEncoderRuntime.load(artifact_v1, intra_op_threads=1)


def test_identity_comes_from_the_manifest(runtime: CrossEncoderRuntime) -> None:
    assert (runtime.name, runtime.version, runtime.max_length) == ("cross-encoder-minilm", "v1", 128)


def test_scores_follow_input_order_whatever_the_batching(runtime: CrossEncoderRuntime) -> None:
    scores = runtime.score("does aspirin help the heart", TEXTS, batch_size=2)
    assert scores.dtype == np.float32 and scores.shape == (len(TEXTS),)
    one_by_one = np.array([runtime.score("does aspirin help the heart", [t])[0] for t in TEXTS])
    np.testing.assert_allclose(scores, one_by_one, atol=1e-5)
    permutation = [3, 0, 4, 2, 1]
    permuted = runtime.score("does aspirin help the heart", [TEXTS[i] for i in permutation], batch_size=3)
    np.testing.assert_allclose(permuted, scores[permutation], atol=1e-5)


def test_pairs_truncate_the_document_and_cap_a_long_query(runtime: CrossEncoderRuntime) -> None:
    long_query = "why " * 500
    scores = runtime.score(long_query, TEXTS, max_length=32)
    assert np.isfinite(scores).all()
    short = runtime.score("q", ["word " * 1000], max_length=16)
    assert np.isfinite(short).all()
    assert runtime.score("q", []).shape == (0,)


def test_pairs_of_different_queries(runtime: CrossEncoderRuntime) -> None:
    pairs = runtime.score_pairs(["aspirin", "vitamin"], [TEXTS[0], TEXTS[3]])
    np.testing.assert_allclose(
        pairs, [runtime.score("aspirin", [TEXTS[0]])[0], runtime.score("vitamin", [TEXTS[3]])[0]], atol=1e-5
    )


def test_a_corrupt_artifact_is_refused_with_a_clear_message(artifact_v1: Path, tmp_path: Path) -> None:
    broken = tmp_path / "v1"
    shutil.copytree(artifact_v1, broken)
    with (broken / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for tokenizer\.json"):
        CrossEncoderRuntime.load(broken)
    manifest = json.loads((artifact_v1 / "manifest.json").read_text())
    manifest["format_version"] = 2
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format_version 2 is not supported"):
        CrossEncoderRuntime.load(broken)
    with pytest.raises(ArtifactError, match="artifact directory not found"):
        CrossEncoderRuntime.load(tmp_path / "missing")


def test_parallel_batches_score_like_sequential_ones(artifact_v1: Path, runtime: CrossEncoderRuntime) -> None:
    parallel = CrossEncoderRuntime.load(artifact_v1, intra_op_threads=1, batch_workers=3)
    try:
        texts = [f"{t} number {i}" for i in range(7) for t in TEXTS]
        queries = [f"query {i % 4} about aspirin" for i in range(len(texts))]
        expected = runtime.score_pairs(queries, texts, batch_size=4)
        np.testing.assert_allclose(parallel.score_pairs(queries, texts, batch_size=4), expected, atol=1e-5)
    finally:
        parallel.close()


def test_parallel_scoring_stops_when_the_caller_gives_up(
    artifact_v1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parallel = CrossEncoderRuntime.load(artifact_v1, intra_op_threads=1, batch_workers=2)
    model_runs = 0
    real_run = parallel._run

    def counted_run(*args: Any) -> Any:
        nonlocal model_runs
        model_runs += 1
        return real_run(*args)

    monkeypatch.setattr(parallel, "_run", counted_run)
    answers = iter([False] * 4)  # once before tokenising, then three passes; then "stop"
    try:
        with pytest.raises(ScoringStopped, match="caller gave up"):
            parallel.score(
                "aspirin",
                [f"document {i}" for i in range(64)],
                batch_size=2,
                should_stop=lambda: next(answers, True),
            )
        assert model_runs == 3, "passes ran after the caller had given up"
    finally:
        parallel.close()


def test_batch_workers_must_be_positive_or_zero_for_one_per_core(artifact_v1: Path) -> None:
    with pytest.raises(ValueError, match="batch_workers must be at least 1, or 0 for one per core"):
        CrossEncoderRuntime.load(artifact_v1, batch_workers=-1)


def test_the_torch_engine_scores_like_the_fp32_graph_whatever_the_batching(
    artifact_v1: Path, runtime: CrossEncoderRuntime
) -> None:
    program = CrossEncoderRuntime.load(artifact_v1, engine="torch", intra_op_threads=1)
    assert (program.engine, program.description) == ("torch", "torch bfloat16 on cpu")
    query = "does aspirin help the heart"
    scores = program.score(query, TEXTS, batch_size=2)
    assert scores.dtype == np.float32 and scores.shape == (len(TEXTS),)
    # bfloat16 keeps 8 bits of mantissa: the test head's scores (about 0.1 apart) agree to a few thousandths.
    np.testing.assert_allclose(scores, runtime.score(query, TEXTS), atol=3e-3)
    one_by_one = np.array([program.score(query, [t])[0] for t in TEXTS])
    np.testing.assert_allclose(scores, one_by_one, atol=3e-3)
    assert program.score(query, []).shape == (0,)


def _copy_with_manifest(artifact: Path, target: Path, **changes: Any) -> Path:
    shutil.copytree(artifact, target)
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest.update(changes)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_the_torch_engine_needs_the_artifact_to_hold_a_program(artifact_v1: Path, tmp_path: Path) -> None:
    without = _copy_with_manifest(artifact_v1, tmp_path / "without", torch_program=None)
    CrossEncoderRuntime.load(without)  # the onnx engine does not need it
    with pytest.raises(ArtifactError, match="has no torch_program, so the torch engine cannot run it"):
        CrossEncoderRuntime.load(without, engine="torch")
    malformed = _copy_with_manifest(
        artifact_v1, tmp_path / "malformed", torch_program={"file": "model.pt2", "dtype": "int4"}
    )
    with pytest.raises(ArtifactError, match="torch_program must be"):
        CrossEncoderRuntime.load(malformed)
    unlisted = _copy_with_manifest(
        artifact_v1, tmp_path / "unlisted", torch_program={"file": "other.pt2", "dtype": "bfloat16"}
    )
    with pytest.raises(ArtifactError, match=r"does not list other\.pt2"):
        CrossEncoderRuntime.load(unlisted, engine="torch")
    with pytest.raises(ValueError, match="engine must be one of auto, onnx, torch"):
        CrossEncoderRuntime.load(artifact_v1, engine="tensorrt")


def test_a_program_that_does_not_load_is_refused(artifact_v1: Path, tmp_path: Path) -> None:
    broken = tmp_path / "v1"
    shutil.copytree(artifact_v1, broken)
    (broken / "model.pt2").write_bytes(b"not a torch program")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for model\.pt2"):
        CrossEncoderRuntime.load(broken, engine="torch")
    with pytest.raises(ArtifactError, match=r"model\.pt2 does not load as a torch program"):
        CrossEncoderRuntime.load(broken, engine="torch", verify_checksums=False)


def _cuda_seen() -> bool:
    import onnxruntime as ort
    import torch

    return bool(torch.cuda.is_available()) or "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(_cuda_seen(), reason="this host can run the model on a GPU (tests/gpu covers it)")
def test_a_gpu_that_nothing_here_can_use_is_an_error_not_a_cpu_fallback(artifact_v1: Path) -> None:
    # ONNX Runtime would quietly run on the CPU; a model placed on a GPU must not.
    no_cuda = "asked to run on cuda:0, but ONNX Runtime here has no usable CUDA provider"
    with pytest.raises(ArtifactError, match=no_cuda):
        CrossEncoderRuntime.load(artifact_v1, engine="onnx", device="cuda:0")
    with pytest.raises(ArtifactError, match=r"model\.pt2 cannot move to cuda"):
        CrossEncoderRuntime.load(artifact_v1, engine="torch", device="cuda")
    with pytest.raises(ArtifactError, match="no usable CUDA provider"):  # auto: onnx, PyTorch sees no GPU
        CrossEncoderRuntime.load(artifact_v1, engine="auto", device="cuda")
    with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N, got 'gpu0'"):
        CrossEncoderRuntime.load(artifact_v1, device="gpu0")
