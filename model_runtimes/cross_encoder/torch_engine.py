"""The `torch` engine of `CrossEncoderRuntime`: the artifact's `torch.export` program, run by PyTorch.

The program is the cross-encoder exported in the dtype its manifest names (bfloat16 by default, see
`training.cross_encoder.export`), with dynamic batch and sequence axes. Loading it needs only torch: no model
code, no transformers. In bfloat16 on a CPU with AMX tiles, oneDNN runs its matrix products several times
faster than fp32 (bench/rerank.py measures it), and its scores stay within a few hundredths of a logit of
fp32, where int8 ONNX moves them by up to a logit and a half.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_common.artifacts import ArtifactError

if TYPE_CHECKING:
    from model_runtimes.cross_encoder.contract import FloatArray, IntArray
    from model_runtimes.cross_encoder.manifest import CrossEncoderManifest

# The cross-encoder's positional inputs, in the order both exporters (training.cross_encoder.export: the ONNX
# graph and this program) trace them with.
PROGRAM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TorchProgramForward:
    """`BatchForward` over a loaded `torch.export` program (thread-safe: it holds no state between calls)."""

    def __init__(self, module: Any, dtype: str, device: str = "cpu") -> None:
        self._module = module
        self._dtype = dtype
        self._device = device

    @property
    def input_names(self) -> frozenset[str]:
        return frozenset(PROGRAM_INPUTS)

    @property
    def description(self) -> str:
        return f"torch {self._dtype} on {self._device}"

    def __call__(self, feeds: dict[str, IntArray]) -> FloatArray:
        import torch

        inputs = [torch.from_numpy(feeds[name]).to(self._device) for name in PROGRAM_INPUTS]
        with torch.inference_mode():
            logits = self._module(*inputs)
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


def open_torch_program(
    artifact_dir: Path, manifest: CrossEncoderManifest, *, intra_op_threads: int = 0, device: str = "cpu"
) -> TorchProgramForward:
    """Loads the artifact's program onto `device` ("cpu", "cuda", "cuda:1") and checks it with one tiny pass.

    Raises:
        ArtifactError: the artifact has no program (exported before programs were written, or with
            `--no-torch-program`), or the program does not load, move to `device` or run.
    """
    import torch

    program = manifest.torch_program
    if program is None:
        raise ArtifactError(
            f"{artifact_dir}: the artifact has no torch_program, so the torch engine cannot run it; "
            "re-export it (python -m training.cross_encoder.export) or use the onnx engine"
        )
    if intra_op_threads > 0:
        torch.set_num_threads(intra_op_threads)
    try:
        exported = torch.export.load(str(artifact_dir / program.file))
    except Exception as exc:
        raise ArtifactError(
            f"{artifact_dir}: {program.file} does not load as a torch program ({exc})"
        ) from None
    if torch.device(device).type != "cpu":
        # The program was traced on a CPU, so its graph names the CPU in ops such as arange: moving only the
        # weights would leave those behind. The pass rewrites every device in the graph and moves the state.
        try:
            from torch.export.passes import move_to_device_pass

            exported = move_to_device_pass(exported, device)
        except Exception as exc:
            raise ArtifactError(f"{artifact_dir}: {program.file} cannot move to {device} ({exc})") from None
    forward = TorchProgramForward(exported.module(), program.dtype, device)
    probe = {name: np.ones((1, 4), dtype=np.int64) for name in PROGRAM_INPUTS}
    probe["token_type_ids"] = np.zeros((1, 4), dtype=np.int64)
    try:
        logits = forward(probe)
    except Exception as exc:
        raise ArtifactError(
            f"{artifact_dir}: {program.file} does not run on a [1, 4] batch ({exc})"
        ) from None
    if logits.shape != (1, 1):
        raise ArtifactError(
            f"{artifact_dir}: {program.file} returns shape {list(logits.shape)}, expected [batch, 1]"
        )
    return forward
