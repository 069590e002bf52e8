"""Loading a stored-vector reranker (ColBERT, the poly-encoder or a re-scoring bi-encoder) and the token
stores its model encoded: what the index builder, the reranker, learned-fusion fitting and the benches
share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_runtimes.bi_encoder_rescorer import BiEncoderRescorer, BiEncoderRescoringModel
from model_runtimes.late_interaction import LateInteractionModel, LateInteractionRuntime
from model_runtimes.poly_encoder import PolyEncoderModel, PolyEncoderRuntime
from model_runtimes.stored_vectors import StoredVectorRuntime
from model_runtimes.token_store import TokenStores
from search_common.artifacts import ArtifactError
from search_common.model_kinds import STORED_VECTOR_KINDS, DocumentEngine

logger = logging.getLogger(__name__)

StoredVectorModelType = LateInteractionModel | PolyEncoderModel | BiEncoderRescoringModel


def load_document_vector_model(
    kind: str,
    artifact: Path,
    *,
    device: str = "cpu",
    document_engine: DocumentEngine = "torch",
    threads: int = 0,
) -> StoredVectorModelType:
    """The model of a stored-vector `kind` from its artifact (a version, or a root's newest version).

    `document_engine` and `threads` are the re-scoring bi-encoder's (`BiEncoderRescoringModel.load`); the
    other kinds encode documents on torch.

    Raises:
        ArtifactError: `kind` is not a stored-vector kind, or the artifact is not one of that kind.
    """
    if kind == "poly-encoder":
        return PolyEncoderModel.load(artifact, device=device)
    if kind == "bi-encoder":
        return BiEncoderRescoringModel.load(
            artifact, device=device, document_engine=document_engine, threads=threads
        )
    if kind == "late-interaction":
        return LateInteractionModel.load(artifact, device=device)
    raise ArtifactError(f"{kind!r} is not a stored-vector model kind ({', '.join(STORED_VECTOR_KINDS)})")


def load_stored_vector_runtime(
    kind: str,
    artifact: Path,
    *,
    token_store: Path | None = None,
    device: str = "cpu",
    intra_op_threads: int = 0,
    on_lookups: Callable[[int, int], None] | None = None,
) -> StoredVectorRuntime:
    """The runtime of a stored-vector artifact of `kind` (a version or a root), over the token stores at
    `token_store` that its model encoded (a version, or the matching one of a root of versions: a
    hot-swapped model brings its own), or encoding every document when None.

    Raises:
        ArtifactError: the artifact is not of `kind`, or no store there was encoded by its model.
    """
    model = load_document_vector_model(kind, artifact, device=device)
    options: dict[str, Any] = dict(
        token_stores=_stores_for(token_store, model.identity),
        device=device,
        intra_op_threads=intra_op_threads,
        on_lookups=on_lookups,
    )
    if isinstance(model, PolyEncoderModel):
        return PolyEncoderRuntime(model, **options)
    if isinstance(model, BiEncoderRescoringModel):
        return BiEncoderRescorer(model, **options)
    return LateInteractionRuntime(model, **options)


def _stores_for(token_store: Path | None, identity: dict[str, str]) -> TokenStores | None:
    if token_store is None:
        return None
    stores = TokenStores.for_model(token_store, identity)
    logger.info("%s over %d stored documents from %s", identity["name"], len(stores), token_store)
    return stores
