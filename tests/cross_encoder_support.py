"""What tests that need a cross-encoder or a tritonserver share: a test artifact and the runnable server.

Artifacts come from `training.cross_encoder.export --untrained`: the packaged MiniLM body, one layer kept, a
seeded fresh head, fp32 so that Triton and in-process scores agree to float precision, and the bfloat16 torch
program beside it. They are built once under var/test-artifacts/ and reused by later runs (rebuilt when an
older export lacks the program); versions differ in the head's seed, so a version change also changes the
scores. `quantized_cross_encoder_artifact` is the same model in the export's default int8 scheme (per-tensor
dynamic activations, whose scale spans a whole forward pass), in a root of its own.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_runtimes.cross_encoder.manifest import read_cross_encoder_manifest
from operations.launch import LocalServiceError
from operations.triton_repository import assemble_model_repository
from operations.tritonserver import TritonInstallation, TritonServer
from search_common.artifacts import ArtifactError

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_ROOT = REPO_ROOT / "var" / "test-artifacts" / "reranker-cross-encoder"
QUANTIZED_ROOT = REPO_ROOT / "var" / "test-artifacts" / "reranker-cross-encoder-int8"
MAX_LENGTH = 128
HEAD_SEEDS = {"v1": 13, "v2": 7}
# Texts of every kind a pair can hold: short, long enough to be cut, empty.
SAMPLE_TEXTS = [
    "Aspirin reduces the risk of heart attack.",
    "Short.",
    "A long document " + "about many things " * 40,
    "Vitamin D deficiency is common in winter.",
    "",
]


def cross_encoder_artifact(version: str = "v1") -> Path:
    """The test cross-encoder `version` (a key of HEAD_SEEDS), fp32, exported on first use."""
    return _exported(ARTIFACT_ROOT, version, "none")


def quantized_cross_encoder_artifact() -> Path:
    """The v1 test cross-encoder in the export's default int8 scheme, exported on first use."""
    return _exported(QUANTIZED_ROOT, "v1", "int8-per-channel")


def _exported(root: Path, version: str, quantization: str) -> Path:
    target = root / version
    with contextlib.suppress(ArtifactError):
        if read_cross_encoder_manifest(target).torch_program is not None:
            return target
    from training.cross_encoder.export import main as export_main

    shutil.rmtree(target, ignore_errors=True)

    export_main(
        ["--untrained", "--out", str(root), "--version", version, "--layers", "1",
         "--seed", str(HEAD_SEEDS[version]), "--max-length", str(MAX_LENGTH), "--quantization", quantization]
    )  # fmt: skip
    return target


def triton_installation_or_skip() -> TritonInstallation:
    """The tritonserver of .venv-triton; skips the calling test, saying why, where it cannot run."""
    try:
        installation = TritonInstallation.find()
    except LocalServiceError as exc:
        pytest.skip(f"tritonserver not installed here: {exc}")
    reason = installation.cannot_run()
    if reason is not None:
        pytest.skip(f"tritonserver cannot start on this machine: {reason}")
    return installation


@contextlib.contextmanager
def serving_on_triton(installation: TritonInstallation, artifact: Path, work: Path) -> Iterator[TritonServer]:
    """A real tritonserver serving `artifact` on ONNX Runtime, one intra-op thread."""
    repository = assemble_model_repository(
        work / "model_repository",
        artifact_root=artifact.parent,
        artifact_version=artifact.name,
        intra_op_threads=1,
        engine="onnx",
    )
    with TritonServer(repository, installation=installation, work_dir=work / "run") as server:
        yield server
