"""`python -m search_common.triton_repository`: write a runnable Triton model repository for one artifact.

The Kubernetes Triton pod runs this as an init step (deploy/k8s/base/triton.yaml): the committed
`triton_models/` (copied into the Triton image) is assembled into the model-repository volume with the
cross-encoder artifact's root, version, name and max_length written over the placeholders, the instances
made KIND_GPU with `--kind gpu`, and `--engine` naming which of the artifact's models they run. It is
`search_common.local_services.assemble_model_repository` behind flags; the local tritonserver (deploy/local)
uses the same function.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from search_common.artifacts import ArtifactError
from search_common.cross_encoder_runtime import ENGINE_CHOICES
from search_common.local_services import LocalServiceError, assemble_model_repository
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search_common.triton_repository",
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
