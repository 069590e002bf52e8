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
from model_runtimes.query_encoder_onnx import OnnxQueryEncoder, query_encoder
from model_runtimes.stored_vectors import (
    FloatMatrix,
    ManifestedModel,
    StoredVectorRuntime,
    read_model_manifest,
    stacked,
)
from search_common.artifacts import resolve_version
from search_common.model_kinds import DOCUMENT_ENGINES, DocumentEngine

KIND = "bi-encoder"
QUERY_THREADS = 4  # at most, for one query's ONNX Runtime pass
MANIFEST_REQUIRED = ("name", "version", "kind", "weights_sha256", "document_length")


def read_rescorer_manifest(directory: Path, *, verify: bool = True) -> dict[str, Any]:
    """A re-scoring bi-encoder artifact's manifest, checked (and its files' checksum, with verify)."""
    return read_model_manifest(directory, KIND, MANIFEST_REQUIRED, verify=verify)


@dataclass(frozen=True)
class BiEncoderRescoringModel(ManifestedModel):
    """A bi-encoder artifact to re-score with: its checked manifest, the loaded encoder, and the int8 ONNX
    graph its documents go through when loaded with `document_engine="onnx-int8"` (None: torch)."""

    directory: Path
    manifest: Mapping[str, Any]
    encoder: BiEncoder
    documents_onnx: OnnxQueryEncoder | None = None

    @classmethod
    def load(
        cls, path: Path, *, device: str = "cpu", document_engine: DocumentEngine = "torch", threads: int = 0
    ) -> BiEncoderRescoringModel:
        """An artifact version directory, or the newest complete version under a root.

        Args:
            document_engine: what encodes documents: "torch"; "onnx-int8", int8 weights on ONNX Runtime,
                one document per pass (1.6x faster on 2 AVX-512 cores, vectors within a cosine of 0.999 of
                torch's, checked at load); "auto", onnx-int8 on a CPU and torch on a GPU.
            threads: ONNX Runtime threads for documents (0: every core this process may use).

        Raises:
            ArtifactError: not a complete bi-encoder artifact, or the int8 graph fails its check.
            ValueError: an unknown document engine.
        """
        if document_engine not in DOCUMENT_ENGINES:
            raise ValueError(
                f"document engine must be one of {', '.join(DOCUMENT_ENGINES)}, got {document_engine!r}"
            )
        directory = resolve_version(path)
        manifest = read_rescorer_manifest(directory)
        encoder = BiEncoder.load(directory, max_length=int(manifest["document_length"]), device=device)
        if document_engine == "auto":
            document_engine = "onnx-int8" if device == "cpu" else "torch"
        documents_onnx = None
        if document_engine == "onnx-int8":
            threads = threads or len(os.sched_getaffinity(0))
            documents_onnx = OnnxQueryEncoder.from_bi_encoder(
                encoder, threads=threads, scheme="int8-blockwise-weights"
            )
        return cls(directory, manifest, encoder, documents_onnx)

    @property
    def document_engine(self) -> str:
        return "torch" if self.documents_onnx is None else "onnx-int8"

    def encode_documents(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """One (1, dim) float32 unit vector per text: what the token store holds for this kind."""
        if self.documents_onnx is not None:
            vectors = self.documents_onnx.encode_each(texts)
        else:
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
