"""Export a cross-encoder checkpoint to a versioned ONNX artifact the reranker loads.

Steps: torch -> ONNX with eager attention (dynamic batch and sequence axes), ONNX Runtime's BERT optimizer
(attention/LayerNorm/GELU fusions), then one of the quantisation schemes in `QUANTIZATION_SCHEMES` (default:
per-channel int8 dynamic quantisation; per-tensor int8 visibly hurts ranking quality; bench/quantization.py
measures each scheme's speed and agreement with fp32). Beside it, unless `--no-torch-program`, the same model
in bfloat16 as a `torch.export` program (`model.pt2`), which the reranker's `torch` engine runs: on CPUs with
AMX it is the fast path (model_runtimes/cross_encoder/torch_engine.py). The artifact directory holds both
models, the tokenizer files and `manifest.json`, and is published atomically.

Example:
    python -m training.cross_encoder.export --checkpoint var/checkpoints/ce-listwise \
        --out var/models/cross-encoder
    python -m training.cross_encoder.export --untrained --out var/models/cross-encoder
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_runtimes.cross_encoder.torch_engine import PROGRAM_INPUTS
from model_runtimes.onnx_quantization import blockwise_int8_weights
from search_common.artifacts import atomic_directory, new_version, sha256_file, write_manifest
from search_common.logging_setup import configure_logging
from training.cross_encoder.model import (
    CONFIG_NAME,
    CrossEncoder,
    load_cross_encoder,
    save_untrained_checkpoint,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ONNX_NAME = "model.onnx"
PROGRAM_NAME = "model.pt2"
PROGRAM_DTYPE = "bfloat16"
INPUT_NAMES = PROGRAM_INPUTS  # the order the runtime's torch engine feeds the program
OUTPUT_NAME = "logits"
OPSET = 17


class _PositionalInputs(nn.Module):
    """Positional inputs in the contract's order, for both exporters (ONNX and torch.export)."""

    def __init__(self, model: CrossEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids, attention_mask, token_type_ids)
        return logits


def _export_onnx(model: CrossEncoder, path: Path) -> None:
    model.eval()
    batch, seq = 2, 16
    dummy = (
        torch.ones(batch, seq, dtype=torch.int64) * 1000,
        torch.ones(batch, seq, dtype=torch.int64),
        torch.zeros(batch, seq, dtype=torch.int64),
    )
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    with torch.inference_mode():
        torch.onnx.export(
            _PositionalInputs(model),
            dummy,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _export_program(model: CrossEncoder, path: Path, *, max_length: int) -> None:
    """`torch.export` of the model in PROGRAM_DTYPE, batch and sequence axes dynamic up to max_length."""
    from torch.export import Dim

    program_model = model.to(getattr(torch, PROGRAM_DTYPE)).eval()
    batch = Dim("batch", min=1, max=65_536)
    sequence = Dim("sequence", min=2, max=max(max_length, 16))
    dummy = (
        torch.full((2, 16), 1000, dtype=torch.int64),
        torch.ones(2, 16, dtype=torch.int64),
        torch.zeros(2, 16, dtype=torch.int64),
    )
    with torch.no_grad():
        program = torch.export.export(
            _PositionalInputs(program_model),
            dummy,
            dynamic_shapes=tuple({0: batch, 1: sequence} for _ in dummy),
        )
    torch.export.save(program, str(path))


def _optimize(src: Path, dst: Path, *, num_heads: int, hidden_size: int) -> None:
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=False
    )
    logger.info("BERT optimizer fusions: %s", optimized.get_fused_operator_statistics())
    optimized.save_model_to_file(str(dst))


def _dynamic_int8(src: Path, dst: Path, *, keep_ffn_output: bool = False) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = _ffn_output_matmuls(onnx.load(str(src))) if keep_ffn_output else []
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        # Fused ops (com.microsoft Attention) defeat shape inference; their outputs are float32.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _ffn_output_matmuls(model: Any) -> list[str]:
    """The feed-forward down-projections (intermediate -> hidden): their GELU inputs carry the outliers that
    per-tensor dynamic activation quantisation handles worst."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((shapes[i] for i in node.input if i in shapes), None)
        if weight is not None and len(weight) == 2 and weight[0] > weight[1]:
            names.append(node.name)
    return names


def _blockwise_int8_weights(src: Path, dst: Path) -> None:
    """MatMul weights as int8 blocks of 32 (batch-invariant: `model_runtimes.onnx_quantization`)."""
    dst.write_bytes(blockwise_int8_weights(src.read_bytes()))


QUANTIZATION_SCHEMES: dict[str, Callable[[Path, Path], None] | None] = {
    "none": None,
    "int8-per-channel": _dynamic_int8,
    "int8-per-channel-fp32-ffn-out": partial(_dynamic_int8, keep_ffn_output=True),
    "int8-blockwise-weights": _blockwise_int8_weights,
}
"""Served formats by name, recorded as the manifest's `quantization`: the optimised fp32 graph; per-channel
int8 weights with per-tensor dynamic int8 activations (the default: fastest); the same with the feed-forward
down-projections left in fp32; int8 weight blocks with per-row activation blocks (batch-invariant)."""
DEFAULT_QUANTIZATION = "int8-per-channel"


def export_cross_encoder(
    model_dir: Path,
    out: Path,
    *,
    max_length: int,
    quantization: str = DEFAULT_QUANTIZATION,
    name: str = "cross-encoder-minilm",
    manifest_extra: Mapping[str, Any] | None = None,
    torch_program: bool = True,
) -> Path:
    """Exports the checkpoint in `model_dir` to the artifact directory `out`, written atomically.

    Args:
        model_dir: a checkpoint written by `CrossEncoder.save` (see `training.cross_encoder.model`).
        out: the artifact directory itself, e.g. `var/models/cross-encoder/<version>`; its name is
            the version.
        max_length: the token budget the model was trained for; recorded for the runtime to truncate at.
        quantization: a `QUANTIZATION_SCHEMES` name; "none" keeps the optimised fp32 graph.
        name: the model name recorded in the manifest.
        manifest_extra: merged into the manifest (training_data_sha256, hyperparameters, eval, ...).
        torch_program: also write the bfloat16 `torch.export` program the torch engine runs.

    Returns:
        `out`.
    """
    if quantization not in QUANTIZATION_SCHEMES:
        raise ValueError(f"unknown quantization {quantization!r}; one of {sorted(QUANTIZATION_SCHEMES)}")
    quantize = QUANTIZATION_SCHEMES[quantization]
    model, tokenizer = load_cross_encoder(model_dir, attn_implementation="eager")
    body_config = model.body.config
    with atomic_directory(out) as scratch, tempfile.TemporaryDirectory(prefix="ce-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        _export_onnx(model, raw)
        optimized = Path(tmp) / "optimized.onnx"
        _optimize(
            raw,
            optimized,
            num_heads=int(body_config.num_attention_heads),
            hidden_size=int(body_config.hidden_size),
        )
        target = scratch / ONNX_NAME
        if quantize is not None:
            quantize(optimized, target)
        else:
            optimized.replace(target)
        if torch_program:
            # SDPA attention: the program runs through PyTorch, which fuses it; eager was for the ONNX graph.
            program_model, _ = load_cross_encoder(model_dir)
            _export_program(program_model, scratch / PROGRAM_NAME, max_length=max_length)
        tokenizer.save_pretrained(scratch)
        files = {p.name: sha256_file(p) for p in sorted(scratch.iterdir()) if p.is_file()}
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": out.name,
            "base_model": model.config.base_model,
            "max_length": max_length,
            "num_layers": model.config.num_layers,
            "pooling": model.config.pooling,
            "onnx": ONNX_NAME,
            "inputs": list(INPUT_NAMES),
            "output": OUTPUT_NAME,
            "quantization": quantization,
            "torch_program": {"file": PROGRAM_NAME, "dtype": PROGRAM_DTYPE} if torch_program else None,
            "training_data_sha256": None,
            "hyperparameters": {},
            "eval": {},
        }
        manifest.update(dict(manifest_extra or {}))
        manifest["files"] = files
        write_manifest(scratch, manifest)
    logger.info("exported %s -> %s", model_dir, out)
    return out


def _read_training_record(model_dir: Path) -> dict[str, Any]:
    """The training run's record (training_data_sha256, hyperparameters, eval) saved beside the checkpoint."""
    import json

    for candidate in (model_dir / "training.json", model_dir.parent / "training.json"):
        if candidate.is_file():
            record: dict[str, Any] = json.loads(candidate.read_text())
            return record
    return {}


# What an export writes itself; everything else in a manifest is the training record and its figures.
_EXPORT_KEYS = frozenset(
    {"format_version", "name", "version", "base_model", "max_length", "num_layers", "pooling", "onnx",
     "inputs", "output", "quantization", "torch_program", "files"}
)  # fmt: skip


def _record_of_artifact(artifact: Path) -> dict[str, Any]:
    """An artifact's training record and figures, to carry into a re-export of its checkpoint."""
    from search_common.artifacts import read_manifest

    manifest = read_manifest(artifact, ("version",))
    record = {key: value for key, value in manifest.items() if key not in _EXPORT_KEYS}
    record["reexported_from"] = manifest["version"]
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint directory written by training")
    source.add_argument(
        "--untrained", action="store_true", help="packaged MiniLM body with a seeded fresh head"
    )
    parser.add_argument("--out", type=Path, default=Path("var/models/cross-encoder"), help="artifact root")
    parser.add_argument("--version", default=None, help="version directory name (default: build time)")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--layers", type=int, default=6, help="with --untrained: layers kept")
    parser.add_argument("--seed", type=int, default=13, help="with --untrained: head seed")
    parser.add_argument("--quantization", choices=sorted(QUANTIZATION_SCHEMES), default=DEFAULT_QUANTIZATION)
    parser.add_argument("--no-quantize", action="store_true", help="the same as --quantization none")
    parser.add_argument(
        "--no-torch-program", action="store_true", help="skip the bfloat16 torch.export program (model.pt2)"
    )
    parser.add_argument(
        "--manifest-from",
        type=Path,
        default=None,
        help="with --checkpoint: an artifact of the same checkpoint whose training record and figures the "
        "new version carries (to re-export a released model with what this exporter now writes)",
    )
    args = parser.parse_args(argv)
    if args.manifest_from is not None and args.untrained:
        parser.error("--manifest-from goes with --checkpoint: an untrained model has no record to carry")
    configure_logging()

    version = args.version or new_version()
    with tempfile.TemporaryDirectory(prefix="ce-untrained-") as tmp:
        if args.untrained:
            model_dir = save_untrained_checkpoint(
                Path(tmp) / "ckpt", num_layers=args.layers, seed=args.seed, max_length=args.max_length or 256
            )
            extra: dict[str, Any] = {"hyperparameters": {"untrained": True, "seed": args.seed}}
        else:
            model_dir = args.checkpoint
            if not (model_dir / CONFIG_NAME).is_file():
                parser.error(f"{model_dir} is not a cross-encoder checkpoint (no {CONFIG_NAME})")
            extra = (
                _record_of_artifact(args.manifest_from)
                if args.manifest_from is not None
                else _read_training_record(model_dir)
            )
        import json

        max_length = args.max_length or int(json.loads((model_dir / CONFIG_NAME).read_text())["max_length"])
        path = export_cross_encoder(
            model_dir,
            args.out / version,
            max_length=max_length,
            quantization="none" if args.no_quantize else args.quantization,
            manifest_extra=extra,
            torch_program=not args.no_torch_program,
        )
    logger.info("artifact: %s", path)


if __name__ == "__main__":
    main()
