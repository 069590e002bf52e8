"""`python -m operations.triton_repository`: write a runnable Triton model repository for one artifact.

The Kubernetes Triton pod runs this as an init step (deploy/k8s/base/triton.yaml): the committed
`triton_models/` (copied into the Triton image) is assembled into the model-repository volume with the
cross-encoder artifact's root, version, name and max_length written over the placeholders, the instances
made KIND_GPU with `--kind gpu`, and `--engine` naming which of the artifact's models they run. It is
`operations.triton_repository.assemble_model_repository` behind flags; the local tritonserver (deploy/local)
uses the same function.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from model_runtimes.cross_encoder.contract import ENGINE_CHOICES
from model_runtimes.cross_encoder.onnx_engine import onnx_providers
from operations.launch import (
    REPO_ROOT,
    LocalServiceError,
)
from search_common import triton_contract as tc
from search_common.artifacts import ArtifactError
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)

DEFAULT_MODEL_SOURCE = REPO_ROOT / "triton_models"


def assemble_model_repository(
    destination: Path,
    *,
    artifact_root: Path,
    artifact_version: str,
    artifact_name: str = "",
    artifact_max_length: int | None = None,
    source: Path = DEFAULT_MODEL_SOURCE,
    intra_op_threads: int = 0,
    instance_count: int = 1,
    instance_kind: Literal["cpu", "gpu"] = "cpu",
    engine: str = "auto",
    score_batch_size: int = 0,
    device: str = "",
) -> Path:
    """Copies `triton_models/` to destination with the artifact placeholders in config.pbtxt filled in.

    Name and max_length default to the artifact manifest's; the model refuses to load if they disagree.
    `instance_kind="gpu"` makes the instances KIND_GPU: model.py runs its engine on the instance's GPU.
    `engine` (auto | onnx | torch) is the config's ENGINE: which of the artifact's models the instances run.
    `score_batch_size` (0: the committed value) is SCORE_BATCH_SIZE, the pairs per forward pass: a GPU
    scores a whole dynamic batch in one pass about as fast as a part of it. `device` is DEVICE: empty
    follows the instance kind; "cuda" or "cuda:N" runs the engine on that GPU whatever the kind.
    """
    if engine not in ENGINE_CHOICES:
        raise LocalServiceError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
    if score_batch_size < 0:
        raise LocalServiceError(f"score_batch_size must be >= 0, got {score_batch_size}")
    if device:
        try:
            onnx_providers(device)
        except ValueError as exc:
            raise LocalServiceError(str(exc)) from None
    from search_common.artifacts import read_manifest

    if not (artifact_root / artifact_version / "manifest.json").is_file():
        raise LocalServiceError(f"no cross-encoder artifact at {artifact_root / artifact_version}")
    manifest = read_manifest(artifact_root / artifact_version, ("name", "max_length"))
    artifact_name = artifact_name or str(manifest["name"])
    artifact_max_length = artifact_max_length or int(manifest["max_length"])
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    config_path = destination / tc.MODEL_NAME / "config.pbtxt"
    config = config_path.read_text()
    for placeholder in (tc.ARTIFACT_PLACEHOLDER, tc.VERSION_PLACEHOLDER):
        if placeholder not in config:
            raise LocalServiceError(f"{config_path} lacks the placeholder {placeholder}")
    config = (
        config.replace(tc.ARTIFACT_PLACEHOLDER, str(artifact_root.resolve()))
        .replace(tc.VERSION_PLACEHOLDER, artifact_version)
        .replace(tc.NAME_PLACEHOLDER, artifact_name)
        .replace(tc.MAX_LENGTH_PLACEHOLDER, str(artifact_max_length or ""))
        .replace("    count: 1\n", f"    count: {instance_count}\n")
        .replace("kind: KIND_CPU", "kind: KIND_GPU" if instance_kind == "gpu" else "kind: KIND_CPU")
    )
    settings = {
        tc.PARAM_INTRA_OP_THREADS: str(intra_op_threads),
        tc.PARAM_ENGINE: engine,
        tc.PARAM_DEVICE: device,
    }
    if score_batch_size:  # else the committed value stays
        settings[tc.PARAM_SCORE_BATCH_SIZE] = str(score_batch_size)
    for key, value in settings.items():
        config = _set_parameter(config, key, value, config_path)
    config_path.write_text(config)
    return destination


def _set_parameter(config: str, key: str, value: str, config_path: Path) -> str:
    """config.pbtxt text with the string_value of parameter `key` set to `value`.

    Raises:
        LocalServiceError: the config has no such parameter (or has it twice).
    """
    pattern = rf'(key: "{re.escape(key)}"\n  value: {{ string_value: )"[^"]*"'
    updated, count = re.subn(pattern, lambda match: f'{match.group(1)}"{value}"', config)
    if count != 1:
        raise LocalServiceError(f"{config_path} lacks the parameter {key}")
    return updated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m operations.triton_repository",
        description="Assemble a Triton model repository serving one cross-encoder artifact version.",
    )
    parser.add_argument("--artifact", type=Path, required=True, help="artifact version directory")
    parser.add_argument("--source", type=Path, required=True, help="the committed triton_models/ directory")
    parser.add_argument("--out", type=Path, required=True, help="model repository to (re)create")
    parser.add_argument("--kind", choices=["cpu", "gpu"], default="cpu", help="instance_group kind")
    parser.add_argument("--instances", type=int, default=1, help="model instances")
    parser.add_argument(
        "--intra-op-threads", type=int, default=0, help="intra-op threads (0: the engine decides)"
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        default="auto",
        help="onnx, torch (the artifact's bfloat16 program), or auto (torch where the artifact has the "
        "program and PyTorch can use the instances' device fast: a GPU, or a CPU with AMX-BF16; else onnx)",
    )
    parser.add_argument(
        "--score-batch-size",
        type=int,
        default=0,
        help="pairs per forward pass (0: the committed value; a GPU takes a whole dynamic batch at once)",
    )
    parser.add_argument(
        "--device",
        default="",
        help="where the model runs: empty follows --kind; cuda or cuda:N runs it on that GPU (DEVICE)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        repository = assemble_model_repository(
            args.out,
            artifact_root=args.artifact.parent,
            artifact_version=args.artifact.name,
            source=args.source,
            intra_op_threads=args.intra_op_threads,
            instance_count=args.instances,
            instance_kind=args.kind,
            engine=args.engine,
            score_batch_size=args.score_batch_size,
            device=args.device,
        )
    except (LocalServiceError, ArtifactError) as exc:
        sys.stderr.write(f"triton_repository: error: {exc}\n")
        return 2
    logger.info(
        "assembled %s for %s (%s instances: %d)", repository, args.artifact, args.kind, args.instances
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
