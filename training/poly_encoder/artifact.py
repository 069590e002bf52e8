"""Writing a poly-encoder artifact (the layout `model_runtimes.poly_encoder.PolyEncoderModel` loads)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from model_runtimes.poly_encoder import CODES_FILE, KIND, PolyEncoder
from search_common.artifacts import sha256_tree, write_manifest

MODEL_NAME = "poly-encoder-minilm"


def save_artifact(
    staging: Path,
    network: PolyEncoder,
    tokenizer: PreTrainedTokenizerBase,
    *,
    version: str,
    query_length: int,
    document_length: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes the body, tokenizer, codes and manifest into `staging`; returns the manifest."""
    network.body.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    save_file({"codes": network.codes.detach().contiguous()}, str(staging / CODES_FILE))
    manifest = {
        "name": MODEL_NAME,
        "version": version,
        "kind": KIND,
        "codes": int(network.codes.shape[0]),
        "dimension": int(network.codes.shape[1]),
        "query_length": query_length,
        "document_length": document_length,
        **(extra or {}),
    }
    manifest["weights_sha256"] = sha256_tree(staging)
    write_manifest(staging, manifest)
    return manifest
