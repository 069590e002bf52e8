"""Zero-label ColBERT for a corpus without judgments: the default model's pseudo-queries, trained with PyLate.

The queries, the masked corpus, the BM25 negatives and the held-out gate are the zero-label cross-encoder's
(`training.cross_encoder.default_model`): each document's first sentence queries the document shown without
it, a dotted id's words query its document shown without its title, and a seeded set of documents is held out
(never trained on, never a negative). The model is PyLate's ColBERT from the packaged all-MiniLM-L6-v2,
contrastive over one positive, BM25 hard negatives and the rest of the batch. Its gate is the first stage
the stack serves (the packaged bi-encoder's and BM25's hybrid over the masked corpus) alone against its top
20 re-ranked by the model alone, on the held-out queries: it is published only when it wins there; otherwise
it is kept as `.rejected-<version>-<key>` and the command exits 3.

Models are cached under `<out>/<version>-<key>/`, the key being the checksums of the corpus and the base model
and the recipe: the same inputs return the cached model (or its refusal) at once, and a second process waits
for the first one's training. The demo runs this in the background and serves the model once it is published.

Runs in the training environment `.venv-colbert` (see `training/late_interaction/requirements.txt`):

    .venv-colbert/bin/python -m training.late_interaction.zero_label --corpus var/corpus/stdlib \\
        --out var/models/colbert-zero-label
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from model_runtimes.bi_encoder import default_model_dir
from model_runtimes.late_interaction import KIND, LateInteractionEncoder, maxsim
from search_common.artifacts import (
    atomic_directory,
    new_version,
    read_manifest,
    sha256_file,
    sha256_tree,
    write_manifest,
)
from search_common.documents import Document
from search_common.logging_setup import configure_logging
from training.cross_encoder.data import groups_sha256
from training.cross_encoder.default_model.cache import base_model_sha256, digest_key, exclusive, find_cached
from training.cross_encoder.default_model.gate import QueryScorer, evaluate_scorer
from training.cross_encoder.default_model.mining import make_groups, rank_bm25
from training.cross_encoder.default_model.pseudo_queries import PseudoQuery, prepare_queries
from training.cross_encoder.default_model.recipe import CORPUS_FILE, Budget, Recipe, StepCallback, corpus_file
from training.late_interaction.fit import FitParameters, fit
from training.late_interaction.train import EXPORT_TOLERANCE, GateRefused, check_runtime, refuse

logger = logging.getLogger(__name__)

# The supervised recipe's name too: variants name the model family, and either recipe's model serves them.
MODEL_NAME = "colbert-minilm"
# 2: the gate's first stage is the hybrid the stack serves, not BM25 alone.
RECIPE_VERSION = 2
# The command's exit status when the gate refuses the model (1 is any uncaught error, 2 a usage error).
REFUSED_EXIT_CODE = 3
DEFAULT_OUT_ROOT = Path("var/models/colbert-zero-label")


@dataclass(frozen=True)
class ZeroLabelRecipe:
    """The bounded first-run work and the model's shape.

    Args:
        fit: the model and optimiser (`training.late_interaction.fit`).
        max_groups: training groups (one pseudo-query, its positive, `fit.negatives` BM25 negatives).
        held_out: documents whose first-sentence queries are held out for the gate.
        eval_depth: first-stage (hybrid) candidates re-ranked per held-out query.
    """

    fit: FitParameters = field(default_factory=lambda: FitParameters(base=str(default_model_dir())))
    max_groups: int = 1000
    held_out: int = 300
    eval_depth: int = 20
    skip_top: int = 3
    neg_depth: int = 30
    name_share: float = 0.25

    @classmethod
    def from_json(cls, text: str) -> ZeroLabelRecipe:
        """The recipe `json.dumps(asdict(recipe))` wrote (what the demo hands its child process)."""
        fields = json.loads(text)
        return cls(**{**fields, "fit": FitParameters(**fields["fit"])})

    def budget(self) -> Budget:
        return Budget(max_groups=self.max_groups, held_out=self.held_out, eval_depth=self.eval_depth)

    def query_recipe(self) -> Recipe:
        """The default model's query and negative choices, sized for ColBERT's query length."""
        return Recipe(
            negatives=self.fit.negatives, max_length=2 * self.fit.query_length, skip_top=self.skip_top,
            neg_depth=self.neg_depth, name_share=self.name_share, seed=self.fit.seed,
        )  # fmt: skip


def query_scorer(encoder: LateInteractionEncoder) -> QueryScorer:
    def score(query: str, texts: list[str]) -> npt.NDArray[np.float32]:
        (vectors,) = encoder.encode_queries([query])
        return maxsim(vectors, encoder.encode_documents(texts))

    return score


def gate(
    artifact: Path,
    held: Sequence[PseudoQuery],
    documents: Mapping[str, Document],
    work: Path,
    recipe: ZeroLabelRecipe,
    *,
    progress: bool,
) -> dict[str, Any]:
    """Held-out figures against the first stage the stack serves: the hybrid of the packaged bi-encoder and
    BM25 over the masked corpus (`rank_bm25` wrote it under `work`), its top `eval_depth` re-ranked by the
    model alone. `beats_first_stage` is the publish rule.

    Against BM25 alone the gate passed models that lost on real queries (DL19: hybrid 0.791 -> 0.770
    re-ranking the top 10); the dense half of the hybrid already answers most first-sentence queries, so the
    model must add to that, as it must when served.
    """
    from training.cross_encoder.mine import first_stage_candidates

    hybrid = first_stage_candidates(
        work / "masked" / CORPUS_FILE, {q.query_id: q.text for q in held},
        cache_dir=work / "cache", index_root=work / "indexes", depth=recipe.eval_depth + 10,
    )  # fmt: skip
    evaluation = evaluate_scorer(
        query_scorer(LateInteractionEncoder.load(artifact)), held, hybrid, documents,
        depth=recipe.eval_depth, progress=progress, backend="late-interaction (torch)",
        first_stage="hybrid: packaged bi-encoder + BM25, RRF (masked corpus)",
    )  # fmt: skip
    evaluation["beats_first_stage"] = evaluation["reranked_ndcg@10"] > evaluation["first_stage_ndcg@10"]
    return evaluation


def regate(corpus: Path, artifact: Path, recipe: ZeroLabelRecipe, *, progress: bool = True) -> dict[str, Any]:
    """`gate` for an artifact already trained on `corpus` with `recipe` (the held-out queries are rebuilt from
    the seed): how a model published under an older gate fares under this one. Changes nothing on disk."""
    import tempfile

    pseudo, (_, held, _) = prepare_queries(corpus_file(corpus), recipe.budget(), recipe.query_recipe())
    with tempfile.TemporaryDirectory() as scratch:
        rank_bm25(pseudo.documents, held, Path(scratch), depth=recipe.eval_depth, progress=progress)
        return gate(artifact, held, pseudo.documents, Path(scratch), recipe, progress=progress)


def recipe_key(corpus: Path, recipe: ZeroLabelRecipe) -> str:
    """The identity of a trained model: same corpus, base model and recipe, same key."""
    hyperparameters = asdict(recipe)
    base = Path(hyperparameters["fit"].pop("base"))  # its checksum counts, not where it is installed
    return digest_key(
        {
            "recipe": "colbert-zero-label",
            "recipe_version": RECIPE_VERSION,
            "corpus_sha256": sha256_file(corpus_file(corpus)),
            "hyperparameters": hyperparameters,
            "base_model_sha256": base_model_sha256(base),
        }
    )


def cached_model(
    corpus: Path, out_root: Path, recipe: ZeroLabelRecipe, *, require_gain: bool = True
) -> Path | None:
    """The published model for these inputs when one exists (and, with require_gain, beat its first stage on
    held-out queries); never trains."""
    if not corpus_file(corpus).is_file():
        return None
    cached = find_cached(out_root, recipe_key(corpus, recipe))
    if cached is None or (require_gain and not read_manifest(cached)["eval"]["beats_first_stage"]):
        return None
    return cached


def ensure_model(
    corpus: Path,
    out_root: Path,
    recipe: ZeroLabelRecipe,
    *,
    require_gain: bool = True,
    progress: bool = True,
    on_step: StepCallback | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> Path:
    """The published model for `corpus`, trained on first use. Without require_gain (tests of the
    mechanics) a model that loses to its first stage is published too, its manifest saying so.

    Raises:
        GateRefused: this recipe's model did not beat its first stage on held-out pseudo-queries (now or
            before).
        ValueError: the corpus has too few usable pseudo-queries.
    """
    key = recipe_key(corpus, recipe)
    with exclusive(out_root / f".lock-{key[:12]}"):
        cached = find_cached(out_root, key)
        if cached is not None and (read_manifest(cached)["eval"]["beats_first_stage"] or not require_gain):
            logger.info("zero-label ColBERT: cached %s", cached)
            return cached
        lost = [*sorted(out_root.glob(f".rejected-*-{key[:12]}")), *([cached] if cached else [])]
        if require_gain and lost:
            raise GateRefused(f"{lost[0]}: this recipe's model did not beat its first stage")
        return train(
            corpus, out_root, recipe, key=key, require_gain=require_gain, progress=progress,
            on_step=on_step, on_phase=on_phase,
        )  # fmt: skip


def train(
    corpus: Path,
    out_root: Path,
    recipe: ZeroLabelRecipe,
    *,
    key: str,
    require_gain: bool = True,
    progress: bool = True,
    on_step: StepCallback | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> Path:
    """Trains, checks and gates one model; returns the published artifact's directory. `on_phase` hears what
    it does once the training steps are done (the gate takes minutes)."""
    path = corpus_file(corpus)
    started = time.perf_counter()
    cpu_started = time.process_time()
    pseudo, (train_queries, held, held_docs) = prepare_queries(path, recipe.budget(), recipe.query_recipe())
    if not train_queries or not held:
        raise ValueError(f"{path}: too few usable pseudo-queries to train and evaluate")
    logger.info(
        "%d documents, %d pseudo-queries: %d for training, %d held out",
        len(pseudo.documents), len(pseudo.queries), len(train_queries), len(held),
    )  # fmt: skip
    name = f"{new_version()}-{key[:12]}"
    with atomic_directory(out_root / name) as staging:
        depth = max(recipe.neg_depth, recipe.eval_depth) + 10
        ranked = rank_bm25(pseudo.documents, [*train_queries, *held], staging / ".mining", depth=depth,
                           progress=progress)  # fmt: skip
        groups = make_groups(train_queries, ranked, recipe=recipe.query_recipe(), exclude_docs=held_docs)
        mined = time.perf_counter()
        model = fit(recipe.fit, groups, pseudo.documents, staging / ".trainer", on_step=on_step)
        trained = time.perf_counter()
        model.save(str(staging))
        shutil.rmtree(staging / ".trainer")
        probe = [pseudo.documents[g.positive].model_text() for g in groups[:8]]
        probe += [g.query for g in groups[:8]]
        error = check_runtime(model, staging, probe)
        if error > EXPORT_TOLERANCE:
            raise RuntimeError(f"the serving runtime differs from PyLate by {error:.2e} > {EXPORT_TOLERANCE}")
        if on_phase is not None:
            on_phase(f"checking the model on {len(held)} held-out queries against the first stage")
        evaluation = gate(staging, held, pseudo.documents, staging / ".mining", recipe, progress=progress)
        shutil.rmtree(staging / ".mining")
        write_manifest(
            staging,
            {
                "name": MODEL_NAME,
                "version": name,
                "kind": KIND,
                "recipe": "zero-label",
                "recipe_version": RECIPE_VERSION,
                "cache_key": key,
                "corpus": str(path),
                "corpus_sha256": sha256_file(path),
                "hyperparameters": asdict(recipe),
                "query_length": recipe.fit.query_length,
                "document_length": recipe.fit.document_length,
                "training": {
                    "source": "corpus pseudo-queries (first sentence / qualified name), BM25 negatives",
                    "groups": len(groups),
                    "sentence_groups": sum(1 for g in groups if not g.title_free),
                    "name_groups": sum(1 for g in groups if g.title_free),
                },
                "training_data_sha256": groups_sha256(groups),
                "runtime_max_abs_error": error,
                "eval": evaluation,
                "timings_seconds": {
                    "mining": mined - started,
                    "training": trained - mined,
                    "evaluation": time.perf_counter() - trained,
                    "total": time.perf_counter() - started,
                },
                "train_cpu_minutes": (time.process_time() - cpu_started) / 60,
                "weights_sha256": sha256_tree(staging),
            },
        )
    logger.info(
        "held-out nDCG@10 (%d queries): first stage %.4f, re-ranked %.4f",
        evaluation["queries"], evaluation["first_stage_ndcg@10"], evaluation["reranked_ndcg@10"],
    )  # fmt: skip
    if require_gain and not evaluation["beats_first_stage"]:
        refuse(
            out_root / name,
            f"does not beat its first stage on held-out pseudo-queries: {_summary(evaluation)}",
        )
    return out_root / name


def recipe_arguments(recipe: ZeroLabelRecipe, *, require_gain: bool = True) -> list[str]:
    """The command-line flags that make `main` train exactly `recipe` (the demo's child process gets them)."""
    return ["--recipe", json.dumps(asdict(recipe)), *([] if require_gain else ["--allow-no-gain"])]


def _progress_writers(path: Path | None) -> tuple[StepCallback | None, Callable[[str], None] | None]:
    """Callbacks that write the training's step ("step 3/63") and later phase ("phase: ...") to `path`,
    atomically, for a waiting demo to read; (None, None) without a path."""
    if path is None:
        return None, None
    target = path

    def write(text: str) -> None:
        scratch = target.with_name(f".{target.name}.tmp")
        scratch.write_text(text + "\n", encoding="utf-8")
        scratch.replace(target)

    return (lambda done, total: write(f"step {done}/{total}")), (lambda phase: write(f"phase: {phase}"))


def _summary(evaluation: dict[str, Any]) -> str:
    return f"{evaluation['reranked_ndcg@10']:.4f} <= {evaluation['first_stage_ndcg@10']:.4f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (corpus.jsonl) or file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_ROOT, help="models go to OUT/<version>-<key>")
    parser.add_argument("--base", type=Path, default=None, help="body (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--max-groups", type=int, default=ZeroLabelRecipe.max_groups)
    parser.add_argument("--held-out", type=int, default=ZeroLabelRecipe.held_out)
    parser.add_argument("--eval-depth", type=int, default=ZeroLabelRecipe.eval_depth)
    parser.add_argument("--document-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--progress-file", type=Path, default=None, help="keep 'step DONE/TOTAL' of the training here"
    )
    parser.add_argument("--recipe", default=None, help="the whole recipe as JSON (overrides the flags above)")
    parser.add_argument(
        "--allow-no-gain",
        action="store_true",
        help="publish even when the first stage wins on held-out queries",
    )
    parser.add_argument(
        "--regate", type=Path, default=None, metavar="ARTIFACT",
        help="only measure ARTIFACT (trained on --corpus with these flags) under this gate; print JSON",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not corpus_file(args.corpus).is_file():
        parser.error(f"--corpus {args.corpus}: no corpus.jsonl there")
    if args.base is not None and not (args.base / "config.json").is_file():
        parser.error(f"--base {args.base}: not a model folder (no config.json)")
    for name in ("max_groups", "held_out", "eval_depth", "document_length"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    configure_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    fit_parameters = FitParameters(
        base=str(args.base or default_model_dir()), document_length=args.document_length, seed=args.seed
    )
    recipe = ZeroLabelRecipe(
        fit=fit_parameters, max_groups=args.max_groups, held_out=args.held_out, eval_depth=args.eval_depth
    )
    try:
        if args.recipe:
            recipe = ZeroLabelRecipe.from_json(args.recipe)
    except (ValueError, TypeError, KeyError) as exc:
        parser.error(f"--recipe: not a zero-label recipe: {exc}")
    if args.regate is not None:
        print(json.dumps(regate(args.corpus, args.regate, recipe), indent=2))
        return
    on_step, on_phase = _progress_writers(args.progress_file)
    try:
        published = ensure_model(
            args.corpus, args.out, recipe,
            require_gain=not args.allow_no_gain, on_step=on_step, on_phase=on_phase,
        )  # fmt: skip
    except GateRefused as refused:
        logger.error("not published: %s", refused)
        raise SystemExit(REFUSED_EXIT_CODE) from None
    except ValueError as exc:
        parser.error(str(exc))
    logger.info("published %s", published)


if __name__ == "__main__":
    main()
