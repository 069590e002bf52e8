"""The `onnx` engine of `CrossEncoderRuntime`: ONNX Runtime over the artifact's `model.onnx`, on a CPU or
through its CUDA provider."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from model_runtimes.cross_encoder.contract import (
    ATTENTION_MASK,
    INPUT_IDS,
    OUTPUT_LOGITS,
    TOKEN_TYPE_IDS,
    FloatArray,
    IntArray,
)
from model_runtimes.cross_encoder.manifest import CrossEncoderManifest
from search_common.artifacts import ArtifactError

logger = logging.getLogger(__name__)


# An ONNX Runtime provider: a name, or (name, options) such as ("CUDAExecutionProvider", {"device_id": 0}).
Provider = str | tuple[str, dict[str, Any]]
CUDA_PROVIDER = "CUDAExecutionProvider"


def onnx_providers(device: str) -> list[Provider]:
    """ONNX Runtime providers for `device`: "cpu", or "cuda"/"cuda:N" (its CUDA provider first)."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind != "cuda" or not (index == "" or index.isdigit()):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return [(CUDA_PROVIDER, {"device_id": int(index or "0")}), "CPUExecutionProvider"]


def _check_graph_matches_manifest(
    artifact_dir: Path, manifest: CrossEncoderManifest, session: Any, inputs: set[str]
) -> None:
    """Refuses a model file that is not the one the manifest describes, or whose score head is not 1 wide.

    A two-class head (or any other width) would otherwise be scored by silently taking its first column.
    """
    logits = next(node for node in session.get_outputs() if node.name == OUTPUT_LOGITS)
    shape = list(logits.shape or [])
    width = shape[-1] if shape else None
    if len(shape) != 2 or (isinstance(width, int) and width != 1):
        raise ArtifactError(
            f"{artifact_dir}: score head '{OUTPUT_LOGITS}' has shape {shape}, expected [batch, 1]"
        )
    listed = manifest.raw.get("inputs")
    if listed is not None and (not isinstance(listed, list) or set(listed) != inputs):
        raise ArtifactError(
            f"{artifact_dir}: manifest lists inputs {listed!r} but {manifest.onnx} takes {sorted(inputs)}"
        )
    declared_output = manifest.raw.get("output")
    if declared_output is not None and declared_output != OUTPUT_LOGITS:
        raise ArtifactError(
            f"{artifact_dir}: manifest output {declared_output!r} is not the runtime's '{OUTPUT_LOGITS}'"
        )


class _OnnxForward:
    """`BatchForward` over an ONNX Runtime session (thread-safe: `InferenceSession.run` may be called at once
    from many threads)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._inputs = frozenset(node.name for node in session.get_inputs())

    @property
    def input_names(self) -> frozenset[str]:
        return self._inputs

    @property
    def description(self) -> str:
        return "onnx " + ",".join(self._session.get_providers())

    def __call__(self, feeds: dict[str, IntArray]) -> FloatArray:
        (logits,) = self._session.run([OUTPUT_LOGITS], feeds)
        return np.asarray(logits, dtype=np.float32)


def _open_onnx(
    artifact_dir: Path, manifest: CrossEncoderManifest, device: str, intra_op_threads: int
) -> _OnnxForward:
    import onnxruntime as ort  # here, so the pure helpers import without it (Triton-only images)

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(
            str(artifact_dir / manifest.onnx), sess_options=options, providers=onnx_providers(device)
        )
    except Exception as exc:
        raise ArtifactError(
            f"{artifact_dir}: {manifest.onnx} does not load in ONNX Runtime ({exc})"
        ) from None
    if device != "cpu" and CUDA_PROVIDER not in session.get_providers():
        # ONNX Runtime falls back to the CPU quietly; a model asked to run on a GPU must not.
        raise ArtifactError(
            f"{artifact_dir}: asked to run on {device}, but ONNX Runtime here has no usable CUDA provider "
            f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
        )
    inputs = {node.name for node in session.get_inputs()}
    outputs = {node.name for node in session.get_outputs()}
    if not {INPUT_IDS, ATTENTION_MASK} <= inputs or not inputs <= {INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS}:
        raise ArtifactError(f"{artifact_dir}: unexpected model inputs {sorted(inputs)}")
    if OUTPUT_LOGITS not in outputs:
        raise ArtifactError(f"{artifact_dir}: model has no '{OUTPUT_LOGITS}' output (has {sorted(outputs)})")
    _check_graph_matches_manifest(artifact_dir, manifest, session, inputs)
    return _OnnxForward(session)
