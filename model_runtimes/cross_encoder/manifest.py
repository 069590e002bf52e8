"""A cross-encoder artifact's manifest, read and checked, and the engine choice it allows.

An artifact is a directory `<root>/<version>/` holding `model.onnx` (inputs `input_ids`, `attention_mask`,
optionally `token_type_ids`, int64 [batch, seq]; output `logits` float32 [batch, 1]), `tokenizer.json` and a
`manifest.json` (format_version 1, name, version, max_length, onnx, files {name: sha256}). It may also hold
`torch_program` (`{"file": "model.pt2", "dtype": "bfloat16"}`): the same model as a `torch.export` program."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_runtimes.cross_encoder.contract import (
    ENGINE_CHOICES,
    FORMAT_VERSION,
    REQUIRED_MANIFEST_KEYS,
    ROW_INDEPENDENT_QUANTIZATION,
    TOKENIZER_FILE,
)
from search_common.artifacts import ArtifactError, read_manifest, verify_checksums

# --- artifact ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TorchProgram:
    """The artifact's `torch.export` program: its file and the dtype its weights were exported in."""

    file: str
    dtype: str


@dataclass(frozen=True, slots=True)
class CrossEncoderManifest:
    name: str
    version: str
    max_length: int
    onnx: str
    raw: dict[str, Any]
    torch_program: TorchProgram | None = None


def read_cross_encoder_manifest(artifact_dir: Path, *, verify: bool = True) -> CrossEncoderManifest:
    """Reads and checks a cross-encoder manifest (and, with verify, every listed file's checksum).

    Raises:
        ArtifactError: with a message naming the artifact and what is wrong with it.
    """
    if not artifact_dir.is_dir():
        raise ArtifactError(f"{artifact_dir}: cross-encoder artifact directory not found")
    manifest = read_manifest(artifact_dir, REQUIRED_MANIFEST_KEYS)
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            f"{artifact_dir}: manifest format_version {manifest['format_version']!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    name, version, onnx_name = manifest["name"], manifest["version"], manifest["onnx"]
    max_length = manifest["max_length"]
    for key, value in (("name", name), ("version", version), ("onnx", onnx_name)):
        if not isinstance(value, str) or not value:
            raise ArtifactError(f"{artifact_dir}: manifest {key} must be a non-empty string")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 8:
        raise ArtifactError(
            f"{artifact_dir}: manifest max_length must be an integer >= 8, got {max_length!r}"
        )
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ArtifactError(f"{artifact_dir}: manifest files must map file names to sha256 strings")
    program = _torch_program_entry(artifact_dir, manifest.get("torch_program"))
    for needed in (onnx_name, TOKENIZER_FILE, *([program.file] if program is not None else [])):
        if needed not in files:
            raise ArtifactError(f"{artifact_dir}: manifest files does not list {needed}")
    if verify:
        verify_checksums(artifact_dir, files)
    return CrossEncoderManifest(name, version, max_length, onnx_name, manifest, program)


def _torch_program_entry(artifact_dir: Path, entry: object) -> TorchProgram | None:
    if entry is None:
        return None
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("file"), str)
        and entry["file"]
        and entry.get("dtype") in ("bfloat16", "float32")
    ):
        raise ArtifactError(
            f"{artifact_dir}: manifest torch_program must be {{file: name, dtype: bfloat16|float32}}, "
            f"got {entry!r}"
        )
    return TorchProgram(entry["file"], entry["dtype"])


def rows_interact(manifest: CrossEncoderManifest, engine: str) -> bool:
    """Whether `engine`'s passes over this artifact let one row's values change another row's score."""
    return engine == "onnx" and manifest.raw.get("quantization") not in ROW_INDEPENDENT_QUANTIZATION


def choose_engine(requested: str, manifest: CrossEncoderManifest, device: str = "cpu") -> str:
    """The engine `requested` means for this artifact on `device`; the one place "auto" is decided.

    auto is torch where it is the fast path: the artifact holds a torch program, PyTorch is installed, and
    either the device is a CUDA GPU PyTorch can use, or it is a CPU that multiplies bfloat16 matrices in
    hardware (AMX-BF16); onnx everywhere else (on a GPU, ONNX Runtime's CUDA provider).

    Raises:
        ValueError: an engine that is not one of ENGINE_CHOICES.
    """
    if requested not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {requested!r}")
    if requested != "auto":
        return requested
    import importlib.util

    from model_runtimes.hardware import cpu_has_bf16_matrix_units, cuda_is_available

    if manifest.torch_program is None or importlib.util.find_spec("torch") is None:
        return "onnx"
    on_cpu = device.split(":", 1)[0] == "cpu"
    fast = cpu_has_bf16_matrix_units() if on_cpu else cuda_is_available()
    return "torch" if fast else "onnx"
