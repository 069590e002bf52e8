"""The kinds of second-stage model whose documents' vectors are stored at index time.

One list for the reranker's backends, the index builder's kinds and the evaluation flags, kept apart from
the runtimes so configuration modules name them without importing torch.
"""

from __future__ import annotations

from typing import Literal

# late-interaction: ColBERT (token vectors); poly-encoder: one vector per document, m query codes;
# bi-encoder: a larger bi-encoder re-scoring with one vector per document (no training, no labels).
STORED_VECTOR_KINDS = ("late-interaction", "poly-encoder", "bi-encoder")

# What encodes a re-scoring bi-encoder's documents at index time: torch; its int8-weight ONNX graph, one
# document per pass (1.6x faster on 2 AVX-512 cores); or auto, the ONNX graph on a CPU and torch on a GPU.
DocumentEngine = Literal["auto", "torch", "onnx-int8"]
DOCUMENT_ENGINES: tuple[DocumentEngine, ...] = ("auto", "torch", "onnx-int8")
