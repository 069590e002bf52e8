"""A larger bi-encoder as the second stage: the cosine of the query with each candidate's stored vector.

The first stage retrieves with a small bi-encoder (all-MiniLM-L6-v2, 6 layers) and BM25; this re-scores
their candidates with a stronger one (all-mpnet-base-v2, 12 layers, `model_runtimes.packaged_models`). It
needs no training and no labels, so it works on any corpus as it comes: the second stage a zero-label
collection can rely on. Each document's vector is computed at index time (`search-build-index --kind
bi-encoder`, a one-row token store per document); a request costs one query forward pass (ONNX Runtime on a
CPU) and a dot product per candidate.

Example:
    model = BiEncoderRescoringModel.load(packaged_mpnet())
    runtime = BiEncoderRescorer(model, token_stores=TokenStores.for_model(store_root, model.identity))
    scores = runtime.score("what causes scurvy?", ["Scurvy is caused by ...", "..."])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model_runtimes.bi_encoder import BiEncoder
from model_runtimes.query_encoder_onnx import query_encoder
from model_runtimes.stored_vectors import (
    FloatMatrix,
    StoredVectorRuntime,
    model_identity,
    read_model_manifest,
    stacked,
)
from search_common.artifacts import resolve_version

KIND = "bi-encoder"
QUERY_THREADS = 4  # at most, for one query's ONNX Runtime pass
MANIFEST_REQUIRED = ("name", "version", "kind", "weights_sha256", "document_length")


def read_rescorer_manifest(directory: Path, *, verify: bool = True) -> dict[str, Any]:
    """A re-scoring bi-encoder artifact's manifest, checked (and its files' checksum, with verify)."""
    return read_model_manifest(directory, KIND, MANIFEST_REQUIRED, verify=verify)


@dataclass(frozen=True)
class BiEncoderRescoringModel:
    """A bi-encoder artifact to re-score with: its checked manifest and the loaded encoder."""

    directory: Path
    manifest: Mapping[str, Any]
    encoder: BiEncoder

    @classmethod
    def load(cls, path: Path, *, device: str = "cpu") -> BiEncoderRescoringModel:
        """An artifact version directory, or the newest complete version under a root."""
        directory = resolve_version(path)
        manifest = read_rescorer_manifest(directory)
        encoder = BiEncoder.load(directory, max_length=int(manifest["document_length"]), device=device)
        return cls(directory, manifest, encoder)

    @property
    def identity(self) -> dict[str, str]:
        return model_identity(self.manifest)

    @property
    def document_length(self) -> int:
        return int(self.manifest["document_length"])

    def encode_documents(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """One (1, dim) float32 unit vector per text: what the token store holds for this kind."""
        vectors = self.encoder.encode_documents(texts, batch_size=16)
        return [vectors[i : i + 1] for i in range(len(vectors))]


class BiEncoderRescorer(StoredVectorRuntime):
    """A served bi-encoder over documents' vectors from index time (`model_runtimes.stored_vectors`);
    `options` are `StoredVectorRuntime`'s (token_stores, device, intra_op_threads, on_lookups)."""

    kind = KIND

    def __init__(self, model: BiEncoderRescoringModel, **options: Any) -> None:
        super().__init__(model, **options)
        # On a CPU the query runs on ONNX Runtime (exported at load, checked against torch). A 12-layer query
        # is worth more than one thread: all-mpnet-base-v2 on 2 cores, 45 ms on one, 27 on two, 59 on torch.
        threads = int(options.get("intra_op_threads", 0)) or min(QUERY_THREADS, len(os.sched_getaffinity(0)))
        self._queries = query_encoder(model.encoder, "auto", threads=threads)

    def _encode_query(self, query: str) -> FloatMatrix:
        vector: FloatMatrix = self._queries.encode_queries([query])[0]
        return vector

    def _score(self, query: FloatMatrix, documents: Sequence[npt.NDArray[np.floating]]) -> FloatMatrix:
        if not documents:
            return np.zeros(0, dtype=np.float32)
        scores: FloatMatrix = stacked(documents) @ query
        return scores
