"""The poly-encoder (Humeau et al., 2020): m learned codes attend over the query's token states.

A document is one vector, the mean of its token states, computed at index time (the token store holds it as
a one-row matrix). A query is m vectors: code i attends over the query's token states and takes their
weighted mean. At scoring time the document attends over the query's m vectors and the score is the cosine
of that mixture with the document. It costs one query forward pass and an m-by-n product per request, as
cheap as a bi-encoder, while the query's representation still depends on the document.

`PolyEncoder` is the network, and its `scores` is the scoring both training (`training.poly_encoder`) and
serving use. An artifact directory holds the transformer body (Hugging Face layout, tokenizer included),
the codes in `poly_codes.safetensors` and a manifest naming them.

Example:
    model = PolyEncoderModel.load(Path("var/models/poly-encoder/v1"))
    runtime = PolyEncoderRuntime(model, token_stores=TokenStores.load(Path("var/indexes/scifact-poly/v1")))
    scores = runtime.score("what causes scurvy?", ["Scurvy is caused by ...", "..."])
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from model_runtimes.stored_vectors import (
    BATCH_SIZE,
    FloatMatrix,
    ManifestedModel,
    StoredVectorRuntime,
    read_model_manifest,
    stacked,
)
from search_common.artifacts import ArtifactError, resolve_version

logger = logging.getLogger(__name__)

KIND = "poly-encoder"
CODES_FILE = "poly_codes.safetensors"
MANIFEST_REQUIRED = ("name", "version", "kind", "weights_sha256", "codes", "query_length", "document_length")


class PolyEncoder(torch.nn.Module):
    """A transformer body shared by queries and documents, and `codes` (m, hidden) learned query codes."""

    def __init__(self, body: PreTrainedModel, codes: torch.Tensor) -> None:
        super().__init__()
        self.body = body
        self.codes = torch.nn.Parameter(codes)

    @classmethod
    def from_base(cls, base: Path, codes: int, *, seed: int) -> PolyEncoder:
        """A body from a model folder and `codes` fresh codes, drawn as the body draws its weights."""
        body = AutoModel.from_pretrained(str(base))
        generator = torch.Generator().manual_seed(seed)
        scale = float(getattr(body.config, "initializer_range", 0.02))
        return cls(body, torch.randn(codes, body.config.hidden_size, generator=generator) * scale)

    def _states(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hidden: torch.Tensor = self.body(**features).last_hidden_state
        return hidden

    def documents(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(batch, hidden): the mean of each document's token states, L2-normalised."""
        states = self._states(features)
        mask = features["attention_mask"].unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(mean, p=2, dim=-1)

    def queries(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(batch, m, hidden): each code's attention-weighted mean of the query's token states."""
        states = self._states(features)
        logits = torch.einsum("md,btd->bmt", self.codes.to(states.dtype), states)
        padding = features["attention_mask"].unsqueeze(1) == 0
        weights = torch.softmax(logits.masked_fill(padding, torch.finfo(logits.dtype).min), dim=-1)
        return torch.einsum("bmt,btd->bmd", weights, states)

    @staticmethod
    def scores(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        """(queries, documents) cosines: each document attends over each query's m vectors, and the mixture
        is compared with the document. `queries` (b, m, hidden), `documents` (n, hidden), normalised."""
        attention = torch.softmax(torch.einsum("bmd,nd->bnm", queries, documents), dim=-1)
        mixed = torch.nn.functional.normalize(torch.einsum("bnm,bmd->bnd", attention, queries), p=2, dim=-1)
        return torch.einsum("bnd,nd->bn", mixed, documents)


def read_poly_encoder_manifest(directory: Path, *, verify: bool = True) -> dict[str, Any]:
    """A poly-encoder artifact's manifest, checked (and its files' checksum, with verify)."""
    return read_model_manifest(directory, KIND, MANIFEST_REQUIRED, verify=verify)


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], length: int
) -> dict[str, torch.Tensor]:
    """The features the body takes, texts cut at `length` tokens (training and serving alike)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=length, return_tensors="pt")
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


@dataclass(frozen=True)
class PolyEncoderModel(ManifestedModel):
    """A published poly-encoder artifact: its checked manifest, tokenizer and network (thread-safe)."""

    directory: Path
    manifest: Mapping[str, Any]
    tokenizer: PreTrainedTokenizerBase
    network: PolyEncoder
    device: str
    _lock: threading.Lock

    @classmethod
    def load(cls, path: Path, *, device: str = "cpu") -> PolyEncoderModel:
        """An artifact version directory, or the newest complete version under a root."""
        directory = resolve_version(path)
        manifest = read_poly_encoder_manifest(directory)
        codes = load_file(str(directory / CODES_FILE))["codes"]
        if codes.shape[0] != int(manifest["codes"]):
            raise ArtifactError(f"{directory}: {codes.shape[0]} codes, the manifest says {manifest['codes']}")
        network = PolyEncoder(AutoModel.from_pretrained(str(directory)), codes).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return cls(directory, manifest, tokenizer, network, device, threading.Lock())

    def _run(self, encode: Callable[[Mapping[str, torch.Tensor]], torch.Tensor], texts: Sequence[str],
             length: int) -> torch.Tensor:  # fmt: skip
        features = {k: v.to(self.device) for k, v in tokenize(self.tokenizer, texts, length).items()}
        with self._lock, torch.inference_mode():
            return encode(features).float().cpu()

    def encode_queries(self, texts: Sequence[str]) -> FloatMatrix:
        """(n, m, hidden) float32."""
        length = int(self.manifest["query_length"])
        parts = [self._run(self.network.queries, texts[i : i + BATCH_SIZE], length)
                 for i in range(0, len(texts), BATCH_SIZE)]  # fmt: skip
        vectors: FloatMatrix = torch.cat(parts).numpy()
        return vectors

    def encode_documents(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """One (1, hidden) float32 matrix per text: what the token store holds for the poly-encoder."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths batch together
        result: list[FloatMatrix | None] = [None] * len(texts)
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            vectors = self._run(self.network.documents, [texts[i] for i in chunk], self.document_length)
            for row, index in enumerate(chunk):
                result[index] = vectors[row : row + 1].numpy()
        return [r for r in result if r is not None]


class PolyEncoderRuntime(StoredVectorRuntime):
    """A served poly-encoder over documents' vectors from index time (`model_runtimes.stored_vectors`);
    `options` are `StoredVectorRuntime`'s (token_stores, device, intra_op_threads, on_lookups)."""

    kind = KIND

    def __init__(self, model: PolyEncoderModel, **options: Any) -> None:
        super().__init__(model, **options)
        self._model = model

    def _encode_query(self, query: str) -> FloatMatrix:
        vectors: FloatMatrix = self._model.encode_queries([query])[0]
        return vectors

    def _score(self, query: FloatMatrix, documents: Sequence[npt.NDArray[np.floating]]) -> FloatMatrix:
        if not documents:
            return np.zeros(0, dtype=np.float32)
        matrix = torch.from_numpy(stacked(documents))
        scores: FloatMatrix = PolyEncoder.scores(torch.from_numpy(query)[None], matrix)[0].numpy()
        return scores
