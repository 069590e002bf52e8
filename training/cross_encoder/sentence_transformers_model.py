"""The project's cross-encoder checkpoint as a sentence-transformers `CrossEncoder`: the baseline benchmarks
compare the served engines with (`CrossEncoder.predict` is what a user would otherwise call).

The project's model mean-pools the body's token states and applies a linear head;
`CrossEncoder(modules=[Transformer, Pooling(mean), Dense(384 -> 1, identity, output "scores")])` is exactly
that architecture, loaded from the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def sentence_transformers_cross_encoder(checkpoint: Path, max_length: int) -> Any:
    """A sentence-transformers CrossEncoder with the checkpoint's body, mean pooling and linear head."""
    from safetensors.torch import load_file
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    config = json.loads((checkpoint / "cross_encoder.json").read_text())
    if config["pooling"] != "mean":
        raise ValueError(f"{checkpoint}: only the mean-pooled head is mapped here, not {config['pooling']!r}")
    body = Transformer(str(checkpoint), max_seq_length=max_length)
    dim = int(body.get_embedding_dimension()) if hasattr(body, "get_embedding_dimension") else 384
    head = load_file(checkpoint / "head.safetensors")
    dense = Dense(
        dim,
        1,
        activation_function=None,
        init_weight=head["weight"],
        init_bias=head["bias"],
        module_input_name="sentence_embedding",
        module_output_name="scores",
    )
    return STCrossEncoder(modules=[body, Pooling(dim, "mean"), dense], device="cpu")
