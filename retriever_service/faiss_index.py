"""Dense shards: FAISS indexes described by a factory string, built, saved, validated at load and searched.

Vectors are L2-normalised and searched by inner product, so scores are cosine similarities. Search knobs
(`nprobe=16`, `efSearch=128`) are FAISS ParameterSpace strings recorded in the manifest and applied at load.
Indexes are built and saved on the CPU side; at load a shard is copied to the GPU when configuration asks for
it (`--faiss-device`: `auto` uses a GPU when FAISS sees one and the index type has a GPU version).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from model_runtimes.bi_encoder import BiEncoder
from retriever_service.config import FAISS_DEVICES, FaissDevice
from retriever_service.shards import (
    DEFAULT_QUERY_LIMIT,
    ShardRetriever,
    load_shard_docs,
    load_shard_manifest,
)
from search_common.artifacts import ArtifactError
from search_common.documents import Candidate, Document, QueryEmbedding, ShardDescription
from search_common.errors import FailedPrecondition, InvalidArgument

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
METRIC = "inner_product"
DENSE_REQUIRED = ("dim", "metric", "factory", "search_params", "encoder")
_IVF = re.compile(r"(?:^|,)IVF(\d+)")

# FAISS's GPU k-selection handles k up to 2048 (GPU_MAX_SELECTION_K); a larger k fails at search time.
GPU_MAX_K = 2048


def make_index(dim: int, factory: str) -> faiss.Index:
    """An empty inner-product index from a factory string; ValueError names a bad string."""
    if not factory.strip():
        raise ValueError("FAISS factory string is empty; try 'Flat', 'IVF256,Flat' or 'HNSW32,Flat'")
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise ValueError(f"invalid FAISS factory string {factory!r}: {first}") from None


def apply_search_params(index: faiss.Index, search_params: str) -> None:
    """Applies a ParameterSpace string such as 'nprobe=16', on a CPU or GPU index; ValueError if bad."""
    if not search_params.strip():
        return
    space = faiss.GpuParameterSpace() if is_gpu_index(index) else faiss.ParameterSpace()
    try:
        space.set_index_parameters(index, search_params)  # type: ignore[arg-type]
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"invalid FAISS search parameters {search_params!r}: {exc}") from None


def gpu_available() -> bool:
    """Whether this FAISS build has GPU support and sees at least one GPU."""
    return bool(hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0)


def is_gpu_index(index: faiss.Index) -> bool:
    return hasattr(faiss, "GpuIndex") and isinstance(faiss.downcast_index(index), faiss.GpuIndex)


_gpu_resources: Any = None
_gpu_resources_lock = threading.Lock()
# StandardGpuResources (one stream and scratch space) is not safe to use from several threads at once, and
# every GPU shard of the process shares it: their searches take this lock. They are short on a GPU.
_gpu_search_lock = threading.Lock()


def gpu_resources() -> Any:
    """The process's one StandardGpuResources: every shard and build shares its scratch memory and stream."""
    global _gpu_resources
    with _gpu_resources_lock:
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        return _gpu_resources


def place_index(index: faiss.Index, device: FaissDevice, *, what: str) -> faiss.Index:
    """The index to search with: `index` itself on the CPU, or its copy on GPU 0.

    `auto` copies when FAISS sees a GPU and the index type has a GPU version (Flat and IVF do, HNSW does
    not); `gpu` insists. Search parameters are not carried over: apply them to the returned index.

    Raises:
        ValueError: `device` is not one of FAISS_DEVICES, or `gpu` was asked for and cannot be had.
    """
    if device not in FAISS_DEVICES:
        raise ValueError(f"{what}: FAISS device must be one of {', '.join(FAISS_DEVICES)}, got {device!r}")
    if device == "cpu":
        return index
    if not gpu_available():
        if device == "gpu":
            raise ValueError(f"{what}: FAISS device 'gpu' asked for, but FAISS sees no GPU")
        return index
    try:
        return faiss.index_cpu_to_gpu(gpu_resources(), 0, index)
    except RuntimeError as exc:  # e.g. HNSW has no GPU implementation
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if device == "gpu":
            raise ValueError(f"{what}: this index type cannot be searched on the GPU: {reason}") from None
        logger.info("%s stays on the CPU (no GPU version: %s)", what, reason)
        return index


def build_faiss_index(vectors: npt.NDArray[np.float32], factory: str) -> faiss.Index:
    """Trains (when needed) and fills an index on the GPU when FAISS sees one; returns a CPU index to save.

    Raises:
        ValueError: a bad factory string, or an IVF nlist larger than the shard's vector count.
    """
    n, dim = vectors.shape
    index = make_index(dim, factory)
    match = _IVF.search(factory)
    if match and int(match.group(1)) > n:
        raise ValueError(
            f"factory {factory!r} asks for {match.group(1)} IVF lists but the shard has only {n} vectors; "
            f"use at most {n} lists (about 4*sqrt(n) = {max(1, int(4 * n**0.5))} is a common choice)"
        )
    work = place_index(index, "auto", what=f"building {factory}")
    logger.info("building %s on the %s", factory, "GPU" if work is not index else "CPU")
    if not work.is_trained:
        work.train(vectors)
    work.add(vectors)
    return faiss.index_gpu_to_cpu(work) if work is not index else index


class FaissRetriever(ShardRetriever[npt.NDArray[np.float32]]):
    """One dense shard in process: query encoding and FAISS search run in worker threads."""

    def __init__(
        self,
        index: faiss.Index,
        documents: list[Document],
        encoder: BiEncoder,
        shard: ShardDescription,
        *,
        max_top_k: int = 1000,
        max_query_chars: int = DEFAULT_QUERY_LIMIT,
    ) -> None:
        if index.ntotal != len(documents):
            raise ArtifactError(f"index holds {index.ntotal} vectors but {len(documents)} documents")
        if index.d != encoder.dim:
            raise ArtifactError(f"index dimension {index.d} != encoder dimension {encoder.dim}")
        super().__init__(documents, shard, max_top_k=max_top_k, max_query_chars=max_query_chars)
        self._index = index
        self._encoder = encoder
        ivf = None if is_gpu_index(index) else faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.make_direct_map()  # so `reconstruct` can give stored vectors back (pseudo-relevance feedback)
        # CPU indexes are safe to search from several threads (FAISS parallelises each search itself);
        # GPU ones share the process's GPU resources, one search at a time.
        self._search_lock: contextlib.AbstractContextManager[Any] = (
            _gpu_search_lock if is_gpu_index(index) else contextlib.nullcontext()
        )

    @property
    def on_gpu(self) -> bool:
        return is_gpu_index(self._index)

    def encode(self, text: str) -> npt.NDArray[np.float32]:
        return self._encoder.encode_queries([text])

    def from_embedding(self, embedding: QueryEmbedding) -> npt.NDArray[np.float32]:
        """The caller's vector as a (1, dim) query, if it comes from this shard's encoder and is usable.

        Raises:
            FailedPrecondition: another encoder made it (its vectors live in another space).
            InvalidArgument: wrong dimension, or NaN/infinite values.
        """
        if embedding.encoder != self._encoder.identity:
            raise FailedPrecondition(
                f"{self.component}: query embedding from encoder {embedding.encoder or '(none)'!r}, "
                f"but this shard's encoder is {self._encoder.identity!r}; send the query text only"
            )
        vector = np.asarray(embedding.values, dtype=np.float32).reshape(1, -1)
        if vector.shape[1] != self._index.d:
            raise InvalidArgument(
                f"query embedding has {vector.shape[1]} dimensions; this shard's index has {self._index.d}"
            )
        if not np.isfinite(vector).all():
            raise InvalidArgument("query embedding holds NaN or infinite values")
        return vector

    def search(self, encoded: npt.NDArray[np.float32], k: int, with_vectors: bool = False) -> list[Candidate]:
        return self.search_vectors(encoded, k, with_vectors)[0]

    def search_vectors(
        self, vectors: npt.NDArray[np.float32], k: int, with_vectors: bool = False
    ) -> list[list[Candidate]]:
        """Top-k candidates per query vector, best first (evaluation uses this with batches of queries).

        With `with_vectors` each candidate carries its stored vector (`reconstruct`; IVF indexes keep a
        direct map for it).

        Raises:
            FailedPrecondition: vectors were asked for and the index type cannot give them back.
        """
        k_eff = min(k, self._index.ntotal)
        if k_eff == 0:
            return [[] for _ in range(len(vectors))]
        with self._search_lock:  # held while reconstructing too: a GPU index is used by one thread at a time
            scores, ids = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), k_eff)
            return [
                [
                    Candidate(self._documents[i], float(s), self._stored_vector(i) if with_vectors else None)
                    for s, i in zip(row_s.tolist(), row_i.tolist(), strict=True)
                    if i >= 0
                ]
                for row_s, row_i in zip(scores, ids, strict=True)
            ]

    def _stored_vector(self, position: int) -> npt.NDArray[np.float32]:
        try:
            return np.asarray(self._index.reconstruct(position), dtype=np.float32)
        except RuntimeError as exc:
            raise FailedPrecondition(
                f"{self.component}: this index cannot return its stored vectors ({exc})"
            ) from None


def load_faiss_shard(
    shard_dir: Path,
    encoder: BiEncoder,
    *,
    max_top_k: int = 1000,
    max_query_chars: int = DEFAULT_QUERY_LIMIT,
    faiss_device: FaissDevice = "auto",
) -> FaissRetriever:
    """Loads and validates one dense shard against an encoder, then places it on `faiss_device`.

    Raises:
        ArtifactError: names what is wrong with the shard, or why it cannot be served on the device asked.
    """
    manifest = load_shard_manifest(shard_dir, "dense", DENSE_REQUIRED)
    check_encoder(shard_dir, manifest, encoder)
    if manifest["metric"] != METRIC:
        raise ArtifactError(
            f"{shard_dir}: metric {manifest['metric']!r} is not supported (expected {METRIC!r})"
        )
    dim = manifest["dim"]
    if dim != encoder.dim:
        raise ArtifactError(f"{shard_dir}: index dimension {dim} != encoder dimension {encoder.dim}")
    try:
        index = faiss.read_index(str(shard_dir / INDEX_FILE))
    except RuntimeError:
        raise ArtifactError(f"{shard_dir}: {INDEX_FILE} is not a readable FAISS index") from None
    if index.d != dim:
        raise ArtifactError(f"{shard_dir}: {INDEX_FILE} has dimension {index.d}, manifest says {dim}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ArtifactError(f"{shard_dir}: {INDEX_FILE} does not use inner product")
    if index.ntotal != manifest["num_documents"]:
        raise ArtifactError(
            f"{shard_dir}: {INDEX_FILE} holds {index.ntotal} vectors, "
            f"manifest says {manifest['num_documents']}"
        )
    try:
        expected = type(faiss.downcast_index(make_index(dim, str(manifest["factory"]))))
    except ValueError as exc:
        raise ArtifactError(f"{shard_dir}: {exc}") from None
    # Loaded indexes may be a subclass of what the factory builds (IndexFlatIP for "Flat").
    if not isinstance(faiss.downcast_index(index), expected):
        raise ArtifactError(
            f"{shard_dir}: {INDEX_FILE} is a {type(faiss.downcast_index(index)).__name__}, "
            f"not what factory {manifest['factory']!r} builds ({expected.__name__})"
        )
    try:
        index = place_index(index, faiss_device, what=str(shard_dir))
        apply_search_params(index, str(manifest["search_params"]))  # on the index that will be searched
    except ValueError as exc:
        raise ArtifactError(f"{shard_dir}: {exc}") from None
    on_gpu = is_gpu_index(index)
    if on_gpu and max_top_k > GPU_MAX_K:
        raise ArtifactError(
            f"{shard_dir}: max_top_k {max_top_k} exceeds what FAISS searches on a GPU ({GPU_MAX_K}); "
            "lower --max-top-k or serve this shard with --faiss-device cpu"
        )
    documents = load_shard_docs(shard_dir, manifest)
    shard = ShardDescription(
        kind="dense",
        shard_id=manifest["shard_id"],
        num_shards=manifest["num_shards"],
        index_name=str(manifest["name"]),
        index_version=str(manifest["version"]),
        num_documents=manifest["num_documents"],
        encoder=encoder.identity,
    )
    logger.info(
        "loaded %s: %s %s, %d vectors, on the %s",
        shard.component,
        manifest["name"],
        manifest["factory"],
        index.ntotal,
        "GPU" if on_gpu else "CPU",
    )
    return FaissRetriever(
        index, documents, encoder, shard, max_top_k=max_top_k, max_query_chars=max_query_chars
    )


def check_encoder(shard_dir: Path, manifest: dict[str, Any], encoder: BiEncoder) -> None:
    recorded = manifest.get("encoder")
    if not isinstance(recorded, dict) or "id" not in recorded or "checksum" not in recorded:
        raise ArtifactError(f"{shard_dir}: manifest 'encoder' must hold id and checksum")
    if recorded["checksum"] != encoder.checksum:
        raise ArtifactError(
            f"{shard_dir}: built with encoder {recorded['id']}, "
            f"but the loaded encoder is {encoder.identity}; "
            "load the encoder the index was built with, or rebuild the index"
        )
