"""What a cross-encoder artifact and its engines agree on: file and tensor names, engine names, array
types and the one-method port every engine implements (`BatchForward`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
OUTPUT_LOGITS = "logits"
REQUIRED_MANIFEST_KEYS = ("format_version", "name", "version", "max_length", "onnx", "files")
ENGINES = ("onnx", "torch")
# What callers may ask for: an engine, or "auto" (see `choose_engine`).
ENGINE_CHOICES = ("auto", *ENGINES)
# The export's quantisation schemes (the manifest's `quantization`) whose rows do not interact: fp32, and int8
# weights with activations quantised per row. The others quantise activations per tensor at run time, so a
# pair's score depends on its pass's other rows; an artifact that names no scheme is treated as one of those.
ROW_INDEPENDENT_QUANTIZATION = frozenset({"none", "int8-blockwise-weights"})

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


class BatchForward(Protocol):
    """One engine's forward pass: padded int64 feeds in, one float32 logit per row out."""

    @property
    def input_names(self) -> frozenset[str]:
        """The feeds it takes (`input_ids`, `attention_mask`, and `token_type_ids` when the model uses it)."""
        ...

    @property
    def description(self) -> str:
        """What runs the model, for logs and metrics, e.g. "onnx CPUExecutionProvider"."""
        ...

    def __call__(self, feeds: dict[str, IntArray]) -> FloatArray: ...
