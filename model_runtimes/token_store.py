"""Documents' ColBERT token vectors, written once at index time and read by the late-interaction reranker.

A store is one directory:

    tokens.npy     float16 [total_tokens, dim]: every document's kept token vectors, one after another
    offsets.npy    int64 [documents + 1]: document i's vectors are rows offsets[i]:offsets[i+1]
    keys.npy       |S16 [documents], sorted: the blake2b-128 digest of each document's model text
    manifest.json  the model (name, version, weights checksum) and settings that produced the vectors,
                   and every file's checksum

Documents are keyed by the digest of the exact text the reranker scores (`Document.model_text()`), not by
id, so an edited document whose text no longer matches is encoded at request time instead of being scored
with stale vectors. Vectors are L2-normalised before the float16 cast; MaxSim over them moves scores by about
1e-3, far below the gaps between candidates. Arrays are memory-mapped: a store larger than memory still
loads at once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from search_common.artifacts import (
    ArtifactError,
    atomic_directory,
    read_manifest,
    sha256_file,
    verify_checksums,
    write_manifest,
)

KIND = "late-interaction-tokens"
FORMAT_VERSION = 1
TOKENS_FILE = "tokens.npy"
OFFSETS_FILE = "offsets.npy"
KEYS_FILE = "keys.npy"
KEY_BYTES = 16
REQUIRED = ("format_version", "kind", "model", "dimension", "document_length", "num_documents", "files")


def text_key(text: str) -> bytes:
    """The store's key for one document text: blake2b-128 of its UTF-8 bytes."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


def write_token_store(
    out: Path,
    texts: Sequence[str],
    vectors: Iterable[npt.NDArray[np.floating]],
    *,
    model: Mapping[str, str],
    document_length: int,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes a store of `texts` with their token `vectors` (one (tokens, dim) matrix per text, in order).

    Duplicate texts are stored once. `model` names the encoder ({"name", "version", "weights_sha256"});
    `extra` adds manifest fields (an index shard's name, version and shard id), never replacing the store's.
    """
    keyed: dict[bytes, npt.NDArray[np.float16]] = {}
    dimension = 0
    for text, matrix in zip(texts, vectors, strict=True):
        array = np.asarray(matrix)
        if array.ndim != 2 or (dimension and array.shape[1] != dimension):
            raise ValueError(f"token vectors must be (tokens, {dimension or 'dim'}), got {array.shape}")
        dimension = int(array.shape[1])
        keyed.setdefault(text_key(text), array.astype(np.float16))
    if not keyed:
        raise ValueError("a token store needs at least one document")
    keys = sorted(keyed)
    lengths = np.array([len(keyed[k]) for k in keys], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with atomic_directory(out, overwrite=overwrite) as scratch:
        np.save(scratch / TOKENS_FILE, np.concatenate([keyed[k] for k in keys]))
        np.save(scratch / OFFSETS_FILE, offsets)
        np.save(scratch / KEYS_FILE, np.array(keys, dtype=f"S{KEY_BYTES}"))
        files = {name: sha256_file(scratch / name) for name in (TOKENS_FILE, OFFSETS_FILE, KEYS_FILE)}
        write_manifest(
            scratch,
            {
                **(extra or {}),
                "format_version": FORMAT_VERSION,
                "kind": KIND,
                "model": dict(model),
                "dimension": dimension,
                "document_length": document_length,
                "dtype": "float16",
                "num_documents": len(keys),
                "num_tokens": int(offsets[-1]),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files,
            },
        )
    return out


class TokenStore:
    """A read-only, memory-mapped token store; `get` finds a document's vectors by its text."""

    def __init__(self, directory: Path, *, verify: bool = True) -> None:
        manifest = read_manifest(directory, REQUIRED)
        if manifest["kind"] != KIND or manifest["format_version"] != FORMAT_VERSION:
            found = f"kind {manifest['kind']!r}, format {manifest['format_version']!r}"
            raise ArtifactError(f"{directory}: not a token store ({found})")
        if verify:
            verify_checksums(directory, manifest["files"])
        self.directory = directory
        self.manifest = manifest
        self.model: dict[str, str] = dict(manifest["model"])
        self.dimension = int(manifest["dimension"])
        self._tokens = np.load(directory / TOKENS_FILE, mmap_mode="r")
        self._offsets = np.load(directory / OFFSETS_FILE)
        self._keys = np.load(directory / KEYS_FILE)
        if len(self._offsets) != len(self._keys) + 1 or self._tokens.shape[1:] != (self.dimension,):
            raise ArtifactError(f"{directory}: token store arrays disagree with each other or the manifest")

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, text: str) -> npt.NDArray[np.float16] | None:
        """The stored vectors of this exact text, or None when the store does not hold it."""
        key = text_key(text)
        row = int(np.searchsorted(self._keys, key))
        # numpy's fixed-width bytes drop trailing NULs when an element is read (one key in 256 ends in one).
        if row >= len(self._keys) or bytes(self._keys[row]).ljust(KEY_BYTES, b"\0") != key:
            return None
        return np.asarray(self._tokens[self._offsets[row] : self._offsets[row + 1]])


class TokenStores:
    """Several stores (one per index shard) behind one lookup; all must come from the same model."""

    def __init__(self, stores: Sequence[TokenStore]) -> None:
        if not stores:
            raise ArtifactError("no token stores given")
        models = {tuple(sorted(s.model.items())) for s in stores}
        if len(models) != 1:
            raise ArtifactError(f"token stores come from different models: {sorted(models)}")
        self.stores = list(stores)
        self.model = stores[0].model

    @classmethod
    def load(cls, directory: Path, *, verify: bool = True) -> TokenStores:
        """A store directory, or an index version whose `shard-*` directories each hold one."""
        if (directory / "manifest.json").is_file() and (directory / TOKENS_FILE).is_file():
            return cls([TokenStore(directory, verify=verify)])
        shards = sorted(p for p in directory.glob("shard-*") if p.is_dir())
        if not shards:
            raise ArtifactError(f"{directory}: neither a token store nor an index with token-store shards")
        return cls([TokenStore(s, verify=verify) for s in shards])

    @classmethod
    def for_model(cls, path: Path, model: Mapping[str, str]) -> TokenStores:
        """The stores at `path` (a version), or the newest version under a root encoded by `model`.

        A root may hold the stores of several models (a retrained one is built beside the one it replaces);
        a reranker loading a model takes the version that model encoded, never a newer one of another.

        Raises:
            ArtifactError: no version there was encoded by `model`.
        """
        if _is_version(path):
            return cls.load(path)
        versions = sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
                          reverse=True) if path.is_dir() else []  # fmt: skip
        for version in versions:
            if not _is_version(version):
                continue
            if cls.load(version, verify=False).model == dict(model):
                return cls.load(version)
        raise ArtifactError(f"{path}: no token store encoded by {dict(model)}; build one with this model")

    def __len__(self) -> int:
        return sum(len(s) for s in self.stores)

    def get(self, text: str) -> npt.NDArray[np.float16] | None:
        for store in self.stores:
            found = store.get(text)
            if found is not None:
                return found
        return None


def _is_version(directory: Path) -> bool:
    """Whether `directory` is one store or one index version of shard stores (not a root of versions)."""
    return (directory / "manifest.json").is_file() or any(directory.glob("shard-*/manifest.json"))
