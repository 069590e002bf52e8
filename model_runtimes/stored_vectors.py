"""Serving a model whose documents' vectors are computed at index time (ColBERT, the poly-encoder).

At request time only the query is encoded; each document's vectors are read from the token stores that
`search-build-index` wrote with the same model, and a document the stores miss (a text the index never saw,
or an edited one) is encoded here, at the cost of a document forward pass. The subclasses say how a query
and documents are encoded and how they are scored; the lookup, the stop checks and the bookkeeping are here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt
import torch

from model_runtimes.stopping import ScoringStopped
from model_runtimes.token_store import TokenStores
from search_common.artifacts import ArtifactError, read_manifest, sha256_tree

FloatMatrix = npt.NDArray[np.float32]
BATCH_SIZE = 32


def read_model_manifest(
    directory: Path, kind: str, required: Sequence[str], *, verify: bool = True
) -> dict[str, Any]:
    """An artifact's manifest, checked to be of `kind` with `required` keys (and, with verify, that its files
    still match `weights_sha256`).

    Raises:
        ArtifactError: the directory is not a complete artifact of that kind, or its files changed.
    """
    manifest = read_manifest(directory, tuple(required))
    if manifest["kind"] != kind:
        raise ArtifactError(f"{directory}: a {manifest['kind']!r} artifact, not a {kind!r} one")
    if verify and sha256_tree(directory) != manifest["weights_sha256"]:
        raise ArtifactError(f"{directory}: files do not match the manifest's weights_sha256")
    return manifest


def model_identity(manifest: Mapping[str, Any]) -> dict[str, str]:
    """What a token store records of the model that encoded it, and must match at serving time."""
    return {key: str(manifest[key]) for key in ("name", "version", "weights_sha256")}


class DocumentVectorModel(Protocol):
    """What `search-build-index` needs of a model to write its token stores."""

    @property
    def identity(self) -> dict[str, str]: ...

    @property
    def document_length(self) -> int: ...

    @property
    def document_engine(self) -> str:
        """What encodes documents ("torch", "onnx-int8"): recorded in the token store it writes."""
        ...

    def encode_documents(self, texts: Sequence[str]) -> list[FloatMatrix]: ...


class StoredVectorModel(DocumentVectorModel, Protocol):
    """What the runtime needs of any loaded artifact: what the index builder needs, and its manifest."""

    @property
    def manifest(self) -> Mapping[str, Any]: ...


class ManifestedModel:
    """What the stored-vector artifacts (ColBERT, the poly-encoder, a re-scoring bi-encoder) read alike from
    their manifest: the identity token stores record, and the document length. Documents go through torch
    unless a subclass says otherwise."""

    manifest: Mapping[str, Any]

    @property
    def identity(self) -> dict[str, str]:
        return model_identity(self.manifest)

    @property
    def document_length(self) -> int:
        return int(self.manifest["document_length"])

    @property
    def document_engine(self) -> str:
        return "torch"


def stacked(documents: Sequence[npt.NDArray[np.floating]]) -> FloatMatrix:
    """One-row document matrices (the poly-encoder's, a re-scoring bi-encoder's) as one float32 matrix."""
    return np.concatenate([np.asarray(d, dtype=np.float32) for d in documents])


class StoredVectorRuntime(ABC):
    """The scoring interface of the reranker's in-process scorer, over documents' stored vectors.

    Args:
        model: the loaded artifact; its identity must match the token stores'.
        token_stores: the documents' vectors from index time, or None to encode every document per request.
        device: "cpu" or "cuda"/"cuda:N", where the model was loaded.
        intra_op_threads: torch threads (0 leaves torch's choice).
        on_lookups: told (hits, misses) after each request's token-store lookups, e.g. to count them.

    Raises:
        ArtifactError: the token stores were encoded by another model or version.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        model: StoredVectorModel,
        *,
        token_stores: TokenStores | None = None,
        device: str = "cpu",
        intra_op_threads: int = 0,
        on_lookups: Callable[[int, int], None] | None = None,
    ) -> None:
        if token_stores is not None and token_stores.model != model.identity:
            raise ArtifactError(
                f"token store {token_stores.stores[0].directory} was encoded by {token_stores.model}, not by "
                f"the served model {model.identity}: rebuild it with this model"
            )
        if intra_op_threads > 0:
            torch.set_num_threads(intra_op_threads)
        self._manifest = model.manifest
        self._documents = model
        self._stores = token_stores
        self._on_lookups = on_lookups
        self._device = device

    @property
    def name(self) -> str:
        return str(self._manifest["name"])

    @property
    def version(self) -> str:
        return str(self._manifest["version"])

    @property
    def max_length(self) -> int:
        """Document tokens per document, fixed when the token store was built."""
        return self._documents.document_length

    @property
    def engine_on_device(self) -> str:
        kind = self._device.partition(":")[0]
        return self.kind if kind == "cpu" else f"{self.kind}-{kind}"

    @abstractmethod
    def _encode_query(self, query: str) -> Any:
        """What `_score` compares documents with."""

    def _encode_documents(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """One matrix per text, as the token store holds it (what the stores miss, at request time)."""
        return self._documents.encode_documents(texts)

    @abstractmethod
    def _score(self, query: Any, documents: Sequence[npt.NDArray[np.floating]]) -> FloatMatrix:
        """One score per document."""

    def score(
        self,
        query: str,
        texts: Sequence[str],
        max_length: int | None = None,
        batch_size: int = BATCH_SIZE,
        should_stop: Callable[[], bool] | None = None,
    ) -> FloatMatrix:
        """Each text's score against the query, float32, in input order.

        `max_length` is accepted for the scoring interface and not used: a document's vectors were fixed
        when it was encoded, and every document is scored on the same tokens whether stored or not.
        """
        stop = should_stop or (lambda: False)
        if stop():
            raise ScoringStopped("scoring skipped: the caller gave up before it started")
        encoded_query = self._encode_query(query)
        documents: list[npt.NDArray[np.floating] | None] = [
            self._stores.get(text) if self._stores is not None else None for text in texts
        ]
        missing = [i for i, found in enumerate(documents) if found is None]
        if self._on_lookups is not None:
            self._on_lookups(len(texts) - len(missing), len(missing))
        for start in range(0, len(missing), batch_size):
            if stop():
                raise ScoringStopped("scoring stopped between batches: the caller gave up")
            chunk = missing[start : start + batch_size]
            for index, vectors in zip(chunk, self._encode_documents([texts[i] for i in chunk]), strict=True):
                documents[index] = vectors
        return self._score(encoded_query, [d for d in documents if d is not None])

    def close(self) -> None:  # noqa: B027 - a hook; these models hold nothing to release
        """Nothing to release: the model and the memory-mapped stores go with the object."""
