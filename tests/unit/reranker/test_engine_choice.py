"""Which in-process engine `--backend auto` picks (`cross_encoder_runtime.choose_engine`, the one place)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from model_runtimes import hardware
from model_runtimes.cross_encoder.manifest import choose_engine, read_cross_encoder_manifest
from reranker_service import bootstrap
from reranker_service.config import BackendKind, Settings, parse_settings
from search_common.artifacts import ArtifactError
from tests.cross_encoder_support import cross_encoder_artifact


@pytest.fixture(scope="module")
def artifact() -> Path:
    cross_encoder_artifact("v2")  # the root's newest version, which a scorer loads for a root
    return cross_encoder_artifact("v1")


def _engine(backend: BackendKind, artifact_dir: Path) -> str:
    """The engine the reranker's composition root loads for `--backend backend`."""
    scorer = bootstrap.build_scorer(Settings(backend=backend, artifact_dir=artifact_dir))
    try:
        return scorer.engine
    finally:
        asyncio.run(scorer.close())


@pytest.mark.parametrize(("amx", "expected"), [(True, "torch"), (False, "onnx")])
def test_auto_picks_torch_only_where_the_cpu_multiplies_bfloat16(
    artifact: Path, monkeypatch: pytest.MonkeyPatch, amx: bool, expected: str
) -> None:
    monkeypatch.setattr(hardware, "cpu_has_bf16_matrix_units", lambda: amx)
    assert _engine("auto", artifact) == expected
    assert _engine("auto", artifact.parent) == expected  # a root: its newest version
    assert _engine("onnx", artifact) == "onnx"


def test_auto_falls_back_to_onnx_for_an_artifact_without_a_program(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hardware, "cpu_has_bf16_matrix_units", lambda: True)
    older = tmp_path / "v1"
    shutil.copytree(artifact, older, ignore=shutil.ignore_patterns("model.pt2"))
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["torch_program"], manifest["files"]["model.pt2"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    assert _engine("auto", older) == "onnx"


def test_the_backend_flag_names_every_engine() -> None:
    assert parse_settings(["--artifact-dir", "a"], environ={}).backend == "auto"
    assert parse_settings(["--backend", "torch", "--artifact-dir", "a"], environ={}).backend == "torch"
    assert (
        parse_settings(["--artifact-dir", "a"], environ={"SEARCH_RERANKER_BACKEND": "onnx"}).backend == "onnx"
    )
    with pytest.raises(ValueError, match="the torch backend needs --artifact-dir"):
        Settings(backend="torch")
    with pytest.raises(SystemExit):
        parse_settings(["--backend", "openvino", "--artifact-dir", "a"], environ={})


def test_choose_engine_needs_pytorch_for_auto_and_checks_names(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = read_cross_encoder_manifest(artifact, verify=False)
    monkeypatch.setattr(hardware, "cpu_has_bf16_matrix_units", lambda: True)
    assert choose_engine("auto", manifest) == "torch"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real_find_spec(name, *a)
    )
    assert choose_engine("auto", manifest) == "onnx"  # a Triton image without PyTorch
    assert choose_engine("torch", manifest) == "torch"  # explicit: loading it then says what is missing
    with pytest.raises(ValueError, match="engine must be one of auto, onnx, torch"):
        choose_engine("tensorrt", manifest)


@pytest.mark.parametrize(("cuda", "expected"), [(True, "torch"), (False, "onnx")])
def test_auto_on_a_gpu_picks_torch_only_where_pytorch_sees_cuda(
    artifact: Path, monkeypatch: pytest.MonkeyPatch, cuda: bool, expected: str
) -> None:
    manifest = read_cross_encoder_manifest(artifact, verify=False)
    monkeypatch.setattr(hardware, "cuda_is_available", lambda: cuda)
    monkeypatch.setattr(hardware, "cpu_has_bf16_matrix_units", lambda: not cuda)
    assert choose_engine("auto", manifest, "cuda:0") == expected  # the GPU decides, not the CPU's AMX
    assert choose_engine("onnx", manifest, "cuda:0") == "onnx"


def test_a_reranker_placed_on_a_gpu_it_cannot_use_fails_to_build(artifact: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() or importlib.util.find_spec("torch") is None:
        pytest.skip("needs a host where nothing can use a GPU")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host can use a GPU")
    with pytest.raises(ArtifactError, match="asked to run on cuda, but ONNX Runtime here has no usable CUDA"):
        bootstrap.build_scorer(Settings(backend="onnx", artifact_dir=artifact, device="cuda"))
    with pytest.raises(ArtifactError, match=r"model\.pt2 cannot move to cuda:1"):
        bootstrap.build_scorer(Settings(backend="torch", artifact_dir=artifact, device="cuda:1"))
