"""Mismatched or corrupt cross-encoder artifacts are refused at load, in process and by the service process.

Checksum and format-version refusals are in test_cross_encoder_runtime.py; these add the model graph's side:
a score head that is not one wide (a wrong dimension), a model file that is not the one the manifest
describes, and a service process that exits with the reason instead of ever reporting SERVING.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from operations.processes import ServiceStack, ServiceStartError
from search_common.artifacts import ArtifactError, sha256_file


def _copy(artifact: Path, tmp_path: Path) -> Path:
    copy = tmp_path / artifact.name
    shutil.copytree(artifact, copy)
    return copy


def _edit_manifest(artifact: Path, **changes: object) -> None:
    path = artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _two_class_head_model(path: Path) -> None:
    """A tiny graph with the runtime's inputs and a [batch, 2] 'logits' (a classifier, not a scorer)."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
        helper.make_node("Cast", ["masked"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["as_float", "axis"], ["summed"], keepdims=1),
        helper.make_node("Concat", ["summed", "summed"], ["logits"], axis=1),
    ]
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "two_class_head", [ids, mask], [logits], initializer=[axis])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_score_head_wider_than_one_is_refused(artifact_v1: Path, tmp_path: Path) -> None:
    broken = _copy(artifact_v1, tmp_path)
    _two_class_head_model(broken / "model.onnx")
    files = json.loads((broken / "manifest.json").read_text())["files"]
    files["model.onnx"] = sha256_file(broken / "model.onnx")  # checksums right: the shape is what's wrong
    _edit_manifest(broken, files=files, inputs=["input_ids", "attention_mask"])
    with pytest.raises(ArtifactError, match=r"score head 'logits' has shape \['batch', 2\], expected"):
        CrossEncoderRuntime.load(broken)


def test_a_model_file_the_manifest_does_not_describe_is_refused(artifact_v1: Path, tmp_path: Path) -> None:
    broken = _copy(artifact_v1, tmp_path)
    _edit_manifest(broken, inputs=["input_ids", "attention_mask"])
    with pytest.raises(ArtifactError, match=r"manifest lists inputs .* but model\.onnx takes"):
        CrossEncoderRuntime.load(broken)
    _edit_manifest(broken, inputs=["input_ids", "attention_mask", "token_type_ids"], output="scores")
    with pytest.raises(ArtifactError, match="manifest output 'scores' is not the runtime's 'logits'"):
        CrossEncoderRuntime.load(broken)


def test_the_reranker_process_refuses_a_corrupt_artifact_and_never_serves(
    artifact_v1: Path, tmp_path: Path
) -> None:
    broken = _copy(artifact_v1, tmp_path / "artifacts")
    with (broken / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    argv = [sys.executable, "-m", "reranker_service", "--artifact-dir", str(broken), "--cache", "none"]
    with ServiceStack(tmp_path / "run") as stack:
        service = stack.spawn("reranker", argv)
        with pytest.raises(ServiceStartError, match="exited with code 1") as info:
            service.wait_ready(120)
    assert r"checksum mismatch for model.onnx" in str(info.value)
    assert "Traceback" not in (tmp_path / "run" / "reranker.log").read_text()
