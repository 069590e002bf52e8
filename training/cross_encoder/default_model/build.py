"""Builds or finds the default model: train, export, gate, publish, cache (`ensure_default_model`), and its
command line."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from search_common.artifacts import (
    new_version,
    read_manifest,
    write_manifest,
)
from search_common.logging_setup import configure_logging
from training.cross_encoder.default_model.cache import (
    base_model_sha256,
    cache_key,
    corpus_sha256,
    exclusive,
    find_cached,
)
from training.cross_encoder.default_model.fit import train_groups
from training.cross_encoder.default_model.gate import evaluate_artifact
from training.cross_encoder.default_model.mining import make_groups, rank_bm25
from training.cross_encoder.default_model.pseudo_queries import prepare_queries
from training.cross_encoder.default_model.recipe import (
    DEFAULT_BUDGET,
    DEFAULT_OUT_ROOT,
    DEFAULT_RECIPE,
    MODEL_NAME,
    RECIPE_VERSION,
    Budget,
    DefaultModelError,
    Recipe,
    StepCallback,
    corpus_file,
)

logger = logging.getLogger(__name__)


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
    on_step: StepCallback | None,
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
    stats = train_groups(
        groups, pseudo.documents, work / "checkpoint", recipe=recipe, progress=progress, on_step=on_step
    )
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
    on_step: StepCallback | None = None,
) -> Path:
    """The artifact directory of the default cross-encoder for `corpus_dir`, trained on first use.

    Args:
        corpus_dir: a BEIR corpus folder (holding corpus.jsonl) or the corpus.jsonl itself, e.g. what
            `corpora.stdlib.ensure_stdlib_corpus` built.
        out_root: where versions live; each is `<out_root>/<version>-<key[:12]>/`, loadable by
            `reranker_service.bootstrap.build_local_reranker`.
        budget: bounds on first-run work (training groups, held-out queries, evaluation depth).
        recipe: learning hyper-parameters.
        require_gain: refuse (DefaultModelError) a model that does not beat BM25 on held-out queries.
        progress: tqdm progress bars on stderr.
        threads: torch CPU threads for training (default: torch's, one per core); on a machine busy with
            other work, 1 avoids oversubscription (seen here: 2 threads ran ~15 s per batch, 1 thread ~3 s).
            Not part of the cache key.
        on_step: told (steps done, steps in all) after every training step, when one trains.

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
    corpus_path = corpus_file(corpus_dir)
    if not corpus_path.is_file():
        raise DefaultModelError(f"{corpus_path}: no corpus to train the default cross-encoder on")
    corpus_sha = corpus_sha256(corpus_path)
    base_sha = base_model_sha256()
    key = cache_key(corpus_sha, budget, recipe, base_sha)
    with exclusive(out_root / f".lock-{key[:12]}"):
        return _ensure_locked(
            corpus_path, out_root, key, corpus_sha, base_sha, budget, recipe, require_gain, progress, on_step
        )


def cached_default_model(
    corpus_dir: Path,
    out_root: Path = DEFAULT_OUT_ROOT,
    *,
    budget: Budget = DEFAULT_BUDGET,
    recipe: Recipe = DEFAULT_RECIPE,
) -> Path | None:
    """The published default model for `corpus_dir` when one is cached (it beat its first stage), else None;
    never trains. Lets a caller serve at once and train in the background only when it must."""
    corpus_path = corpus_file(corpus_dir)
    if not corpus_path.is_file():
        return None
    key = cache_key(corpus_sha256(corpus_path), budget, recipe, base_model_sha256())
    cached = find_cached(out_root, key)
    if cached is None or not read_manifest(cached).get("eval", {}).get("beats_first_stage", False):
        return None
    return cached


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
    on_step: StepCallback | None,
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
            on_step=on_step,
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
