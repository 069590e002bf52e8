"""The kinds of second-stage model whose documents' vectors are stored at index time.

One list for the reranker's backends, the index builder's kinds and the evaluation flags, kept apart from
the runtimes so configuration modules name them without importing torch.
"""

from __future__ import annotations

# late-interaction: ColBERT (token vectors); poly-encoder: one vector per document, m query codes;
# bi-encoder: a larger bi-encoder re-scoring with one vector per document (no training, no labels).
STORED_VECTOR_KINDS = ("late-interaction", "poly-encoder", "bi-encoder")
