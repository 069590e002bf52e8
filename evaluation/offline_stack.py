"""The stack search-eval and search-ab run in process: indexes built or reused under var/ (keyed by corpus and
encoder), loaded as the gateway's own retrievers, and the in-process reranker a variant asks for."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from corpora.beir import BeirDataset, Query
from evaluation.results import EVAL_TOP_K
from gateway.learned_fusion import LearnedFusion
from gateway.pipeline import Degradation, SearchPipeline, SearchQuery
from gateway.variants import Variant, fusion_model_problem
from search_common.artifacts import ArtifactError, read_manifest, resolve_version, sha256_file
from search_common.ports import Reranker, Retriever

if TYPE_CHECKING:
    from model_runtimes.bi_encoder import BiEncoder


logger = logging.getLogger(__name__)


DEFAULT_RERANKER_ARTIFACTS = Path("var/models/cross-encoder")


def _embedded_reranker(
    backend: Literal["onnx", "torch", "late-interaction", "poly-encoder", "bi-encoder"],
) -> Callable[[Path | None, Path | None], Reranker]:
    def build(artifact: Path | None, token_store: Path | None) -> Reranker:
        """The embedded second stage on one engine, without a cache (every query is scored once)."""
        # Imported here: the gateway itself never depends on the reranker's inference stack.
        from reranker_service.bootstrap import build_local_reranker

        return build_local_reranker(
            artifact or DEFAULT_RERANKER_ARTIFACTS, cache="none", backend=backend, token_store=token_store
        )

    return build


# Named in-process rerankers for --reranker: name -> factory(artifact dir from --reranker-artifact, or None
# for the factory's default: the newest artifact under DEFAULT_RERANKER_ARTIFACTS; token store from
# --token-store). onnx is the int8 graph the quality rows were measured with; torch the artifact's bfloat16
# program; late-interaction a ColBERT artifact, poly-encoder a poly-encoder artifact and bi-encoder a
# re-scoring bi-encoder artifact, each over its token store.
RERANKER_FACTORIES: dict[str, Callable[[Path | None, Path | None], Reranker]] = {
    "onnx": _embedded_reranker("onnx"),
    "torch": _embedded_reranker("torch"),
    "late-interaction": _embedded_reranker("late-interaction"),
    "poly-encoder": _embedded_reranker("poly-encoder"),
    "bi-encoder": _embedded_reranker("bi-encoder"),
}


def offline_reranker(
    backend: str,
    artifact: Path | None,
    token_store: Path | None,
    extras: Sequence[tuple[Path, Path | None]] = (),
) -> Reranker | None:
    """The in-process second stage: `backend`'s reranker ("none": no default), plus one per extra artifact,
    routed by the model name its manifest gives (`gateway.reranker_routing`), on the engine its kind names
    (a stored-vector kind, else the cross-encoder's int8 ONNX graph)."""
    default = None if backend == "none" else RERANKER_FACTORIES[backend](artifact, token_store)
    if not extras:
        return default
    from gateway.reranker_routing import RoutedReranker  # the gateway's own router, in process

    routes: dict[str, Reranker] = {}
    for extra, store in extras:
        manifest = read_manifest(resolve_version(extra), required=("name",))
        kind = manifest.get("kind")
        routes[str(manifest["name"])] = RERANKER_FACTORIES[kind if kind in RERANKER_FACTORIES else "onnx"](
            extra, store
        )
    return RoutedReranker(routes, default)


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def ensure_index(
    corpus: Path,
    index_root: Path,
    *,
    kind: Literal["dense", "bm25"],
    num_shards: int = 1,
    factory: str = "Flat",
    encoder: Any = None,
    dataset_name: str | None = None,
) -> Path:
    """An index over `corpus` under `index_root`, reused when one with the same inputs exists.

    The cache key holds the corpus checksum, kind, shard count, factory and (dense) encoder identity, so a
    changed corpus or model never reuses a stale index.
    """
    from retriever_service.build_index import build_index  # the retriever's builder, used as a library

    corpus_sha = sha256_file(corpus)
    encoder_id = ""
    if kind == "dense":
        if encoder is None:
            from model_runtimes.bi_encoder import BiEncoder

            encoder = BiEncoder.load()
        encoder_id = str(encoder.identity)
    name = dataset_name or corpus.parent.name
    if kind == "dense":
        key = f"dense-{num_shards}sh-{_safe(factory)}-{corpus_sha[:16]}-{_safe(encoder_id)[:24]}"
    else:
        from retriever_service.bm25 import BM25_PARAMS, TOKENIZER

        settings_sha = hashlib.sha256(
            json.dumps([BM25_PARAMS, TOKENIZER], sort_keys=True).encode()
        ).hexdigest()
        key = f"bm25-{corpus_sha[:16]}-{settings_sha[:8]}"
    out = index_root / _safe(name) / key
    if out.is_dir():
        try:
            manifest = read_manifest(out, required=("corpus_sha256", "num_shards"))
            if manifest["corpus_sha256"] == corpus_sha and manifest["num_shards"] == num_shards:
                logger.info("reusing %s index %s", kind, out)
                return out
            logger.warning("cached index %s does not match its key; rebuilding", out)
        except ArtifactError as exc:
            logger.warning("cached index unusable (%s); rebuilding", exc)
    logger.info("building %s index (%d shards) at %s", kind, num_shards, out)
    return build_index(
        corpus,
        out,
        kind=kind,
        num_shards=num_shards if kind == "dense" else 1,
        factory=factory,
        name=name,
        encoder=encoder,
        overwrite=True,
    )


def prebuilt_index(prebuilt: Mapping[str, Path] | None, kind: str, corpus: Path) -> Path | None:
    """The prebuilt index given for `kind`, checked to be that kind and built from `corpus`."""
    if not prebuilt or kind not in prebuilt:
        return None
    path = prebuilt[kind]
    try:
        manifest = read_manifest(path, required=("kind", "corpus_sha256"))
    except ArtifactError as exc:
        raise ValueError(f"--{kind}-index: {exc}") from None
    if manifest["kind"] != kind:
        raise ValueError(f"--{kind}-index {path}: a {manifest['kind']} index, not {kind}")
    if manifest["corpus_sha256"] != sha256_file(corpus):
        raise ValueError(f"--{kind}-index {path}: built from another corpus than {corpus}")
    logger.info("using prebuilt %s index %s", kind, path)
    return path


def require_servable(
    variants: Sequence[Variant], reranker: Reranker | None, fusion_models: Mapping[str, LearnedFusion]
) -> None:
    """Raises ValueError naming the flag a variant needs: --reranker, or a fitting --fusion-model (the
    gateway's own check, `gateway.variants.fusion_model_problem`)."""
    fitted_for = {name: model.fit for name, model in fusion_models.items()}
    for variant in variants:
        if variant.reranks and reranker is None:
            raise ValueError(f"variant {variant.name!r} needs a reranker; pass --reranker")
        problem = fusion_model_problem(variant, fitted_for)
        if problem is not None:
            raise ValueError(f"variant {variant.name!r} {problem}")


async def run_queries(
    pipeline: SearchPipeline,
    variant: Variant,
    queries: Sequence[Query],
    *,
    top_k: int = EVAL_TOP_K,
    concurrency: int = 8,
) -> dict[str, list[str]]:
    """Each query's ranked doc ids, several queries in flight; the pipeline is the gateway's own.

    Raises:
        ValueError: a query's answer degraded (a reranker or shard failed it): the figures would be another
            pipeline's, so none are given.
    """
    gate = asyncio.Semaphore(concurrency)
    depth = max(variant.retrieval_depth, top_k)
    rerank_depth = variant.rerank_depth if variant.reranks else 0
    degraded: list[tuple[str, Degradation]] = []

    async def one(query: Query) -> tuple[str, list[str]]:
        async with gate:
            outcome = await pipeline.search(SearchQuery(query.text, top_k, variant, depth, rerank_depth))
        degraded.extend((query.query_id, d) for d in outcome.coverage.degradations)
        return query.query_id, [hit.document.doc_id for hit in outcome.hits]

    run = dict(await asyncio.gather(*(one(q) for q in queries)))
    if degraded:
        query_id, first = degraded[0]
        raise ValueError(
            f"variant {variant.name!r}: {len({q for q, _ in degraded})} of {len(queries)} queries degraded, "
            f"so the figures would not be this variant's; query {query_id}: {first.component} "
            f"{first.reason} ({first.detail})"
        )
    return run


def load_offline_retrievers(
    beir: BeirDataset,
    groups: set[str],
    *,
    index_root: Path,
    num_shards: int,
    prebuilt: Mapping[str, Path] | None,
    encoder_dir: Path | None = None,
    encoder: BiEncoder | None = None,
) -> dict[str, Sequence[Retriever]]:
    """In-process retrievers for the groups named: a prebuilt index, or one built (and cached) for the corpus.

    The dense group embeds with `encoder`, or the one loaded from `encoder_dir` (None: the packaged
    bi-encoder); the index cache key holds the encoder's identity, so each encoder gets its own index and a
    shard built with another one is refused.
    """
    from retriever_service.bootstrap import load_index

    retrievers: dict[str, Sequence[Retriever]] = {}
    if "dense" in groups:
        from model_runtimes.bi_encoder import BiEncoder

        encoder = encoder or BiEncoder.load(encoder_dir)
        dense_dir = prebuilt_index(prebuilt, "dense", beir.corpus_path) or ensure_index(
            beir.corpus_path,
            index_root,
            kind="dense",
            num_shards=num_shards,
            encoder=encoder,
            dataset_name=beir.name,
        )
        retrievers["dense"] = load_index(dense_dir, encoder=encoder)
    if "bm25" in groups:
        bm25_dir = prebuilt_index(prebuilt, "bm25", beir.corpus_path) or ensure_index(
            beir.corpus_path, index_root, kind="bm25", dataset_name=beir.name
        )
        retrievers["bm25"] = load_index(bm25_dir)
    return retrievers
