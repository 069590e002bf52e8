"""Loading a stored-vector reranker (ColBERT or the poly-encoder) with the token stores its model encoded:
what the reranker, learned-fusion fitting and the benches share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_runtimes.late_interaction import LateInteractionModel, LateInteractionRuntime
from model_runtimes.poly_encoder import PolyEncoderModel, PolyEncoderRuntime
from model_runtimes.stored_vectors import StoredVectorRuntime
from model_runtimes.token_store import TokenStores
from search_common.artifacts import ArtifactError

logger = logging.getLogger(__name__)


def load_stored_vector_runtime(
    kind: str,
    artifact: Path,
    *,
    token_store: Path | None = None,
    device: str = "cpu",
    intra_op_threads: int = 0,
    on_lookups: Callable[[int, int], None] | None = None,
) -> StoredVectorRuntime:
    """The runtime of a ColBERT (`kind` "late-interaction") or poly-encoder artifact (a version or a root),
    over the token stores at `token_store` that its model encoded (a version, or the matching one of a root
    of versions: a hot-swapped model brings its own), or encoding every document when None.

    Raises:
        ArtifactError: the artifact is not of `kind`, or no store there was encoded by its model.
    """
    options: dict[str, Any] = dict(device=device, intra_op_threads=intra_op_threads, on_lookups=on_lookups)
    if kind == "poly-encoder":
        poly = PolyEncoderModel.load(artifact, device=device)
        return PolyEncoderRuntime(poly, token_stores=_stores_for(token_store, poly.identity), **options)
    if kind != "late-interaction":
        raise ArtifactError(f"{kind!r} is not a stored-vector model kind (late-interaction, poly-encoder)")
    colbert = LateInteractionModel.load(artifact, device=device)
    return LateInteractionRuntime(colbert, token_stores=_stores_for(token_store, colbert.identity), **options)


def _stores_for(token_store: Path | None, identity: dict[str, str]) -> TokenStores | None:
    if token_store is None:
        return None
    stores = TokenStores.for_model(token_store, identity)
    logger.info("%s over %d stored documents from %s", identity["name"], len(stores), token_store)
    return stores
