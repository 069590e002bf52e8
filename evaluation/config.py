"""Settings of the offline runs over the gateway's pipeline, search-eval and search-ab, parsed from argv."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reranker_service.config import STORED_VECTOR_BACKENDS

# An --extra-reranker: a reranker artifact and, for a stored-vector kind, its token store.
ExtraReranker = tuple[Path, Path | None]


def parse_extra_reranker(value: str) -> ExtraReranker:
    artifact, _, store = value.partition(",")
    if not artifact:
        raise argparse.ArgumentTypeError(f"{value!r}: expected ARTIFACT[,TOKEN_STORE]")
    return Path(artifact), Path(store) if store else None


@dataclass(frozen=True, slots=True)
class EvalSettings:
    """Flags of `search-eval`."""

    dataset: Path
    split: str
    pipelines: tuple[str, ...]
    results_dir: Path = Path("bench/results")
    index_root: Path = Path("var/indexes")
    shards: int = 1
    reranker: str = "none"
    reranker_artifact: Path | None = None
    token_store: Path | None = None
    variants: Path | None = None
    concurrency: int = 8
    max_queries: int | None = None
    log_level: str = "INFO"
    # group -> an existing index version directory to evaluate instead of building one
    prebuilt: Mapping[str, Path] = field(default_factory=dict)
    # a fine-tuned bi-encoder for the dense group (None: the packaged one), and the name its rows carry
    encoder: Path | None = None
    encoder_label: str | None = None
    # names rows of reranked pipelines for the reranker artifact (a zero-label model beside a trained one)
    reranker_label: str | None = None
    # learned-fusion artifacts that variants with `fusion: learned` name
    fusion_models: tuple[Path, ...] = ()
    # further in-process rerankers (artifact, token store), for variants that list several
    extra_rerankers: tuple[ExtraReranker, ...] = ()


def _add_offline_run_options(parser: argparse.ArgumentParser, reranker_choices: Sequence[str]) -> None:
    """Flags `search-eval` and `search-ab` share: the dataset, the indexes, the reranker, logging."""
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR-layout dataset folder")
    parser.add_argument("--split", default="test", help="qrels split (qrels/<split>.tsv)")
    parser.add_argument("--index-root", type=Path, default=Path("var/indexes"), help="index cache root")
    parser.add_argument("--shards", type=int, default=1, help="dense index shards (BM25 has one)")
    parser.add_argument("--reranker", default="none", choices=list(reranker_choices))
    parser.add_argument("--reranker-artifact", type=Path, default=None, help="reranker model artifact dir")
    parser.add_argument(
        "--token-store",
        type=Path,
        default=None,
        help=f"{', '.join(STORED_VECTOR_BACKENDS)}: documents' vectors (search-build-index --kind of the "
        "reranker)",
    )
    parser.add_argument("--variants", type=Path, default=None, help="variants YAML (default: packaged)")
    parser.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument("--dense-index", type=Path, default=None, help="use this built dense index")
    parser.add_argument("--bm25-index", type=Path, default=None, help="use this built BM25 index")
    parser.add_argument(
        "--encoder", type=Path, default=None, help="bi-encoder artifact, dense group (default: packaged)"
    )
    parser.add_argument(
        "--fusion-model",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="learned-fusion artifact for variants with 'fusion: learned' (repeatable)",
    )
    parser.add_argument(
        "--extra-reranker",
        action="append",
        type=parse_extra_reranker,
        default=[],
        metavar="ARTIFACT[,TOKEN_STORE]",
        help="another in-process reranker, serving the model its artifact names, for variants that list "
        "several rerankers; its engine follows the artifact's kind (repeatable)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )


def _check_offline_run_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Path]:
    """Checks the shared flags (exits 2 naming a bad one); returns the prebuilt indexes by group."""
    if not (args.dataset / "corpus.jsonl").is_file():
        parser.error(f"--dataset {args.dataset}: no corpus.jsonl there (expected the BEIR layout)")
    if not (args.dataset / "qrels" / f"{args.split}.tsv").is_file():
        parser.error(f"--split {args.split}: {args.dataset}/qrels/{args.split}.tsv not found")
    if args.shards <= 0:
        parser.error(f"--shards must be positive, got {args.shards}")
    if args.max_queries is not None and args.max_queries <= 0:
        parser.error(f"--max-queries must be positive, got {args.max_queries}")
    if args.encoder is not None and not (args.encoder / "manifest.json").is_file():
        parser.error(f"--encoder {args.encoder}: not a bi-encoder artifact (no manifest.json)")
    if args.token_store is not None and args.reranker not in STORED_VECTOR_BACKENDS:
        parser.error(f"--token-store goes with --reranker {' or '.join(STORED_VECTOR_BACKENDS)}")
    if args.reranker in STORED_VECTOR_BACKENDS and args.reranker_artifact is None:
        parser.error(f"--reranker {args.reranker} needs --reranker-artifact (a {args.reranker} artifact)")
    for directory in args.fusion_model:
        if not (directory / "manifest.json").is_file():
            parser.error(f"--fusion-model {directory}: not a learned-fusion artifact (no manifest.json)")
    for artifact, store in args.extra_reranker:
        if not artifact.is_dir():
            parser.error(f"--extra-reranker {artifact}: no such artifact directory")
        if store is not None and not store.is_dir():
            parser.error(f"--extra-reranker {artifact},{store}: no token store there")
    return {
        kind: path
        for kind, path in (("dense", args.dense_index), ("bm25", args.bm25_index))
        if path is not None
    }


def parse_eval_settings(argv: Sequence[str] | None, reranker_choices: Sequence[str]) -> EvalSettings:
    """Parses `search-eval` flags; a bad flag exits 2 with a message naming it."""
    parser = argparse.ArgumentParser(
        prog="search-eval", description="Run named pipelines over a BEIR dataset; write quality rows."
    )
    _add_offline_run_options(parser, reranker_choices)
    parser.add_argument(
        "--pipeline", action="append", required=True, help="variant name to evaluate (repeatable)"
    )
    parser.add_argument("--results-dir", type=Path, default=Path("bench/results"))
    parser.add_argument("--concurrency", type=int, default=8, help="queries in flight")
    parser.add_argument(
        "--encoder-label",
        default=None,
        help="names rows of dense and hybrid pipelines run with --encoder (dense -> dense-<label>)",
    )
    parser.add_argument(
        "--reranker-label",
        default=None,
        help="names rows of reranked pipelines for this reranker artifact (hybrid10+colbert -> "
        "hybrid10+colbert-<label>), e.g. a zero-label model beside a trained one",
    )
    args = parser.parse_args(argv)
    prebuilt = _check_offline_run_options(parser, args)
    if args.concurrency <= 0:
        parser.error(f"--concurrency must be positive, got {args.concurrency}")
    if (args.encoder is None) != (args.encoder_label is None):
        parser.error("--encoder and --encoder-label go together: another encoder's rows need a name")
    for flag, label in (("--encoder-label", args.encoder_label), ("--reranker-label", args.reranker_label)):
        if label is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", label):
            parser.error(f"{flag} {label!r}: use lower-case letters, digits, '-', '_' and '.'")
    if args.reranker_label is not None and args.reranker == "none":
        parser.error("--reranker-label names a reranker's rows; give --reranker too")
    return EvalSettings(
        dataset=args.dataset,
        split=args.split,
        pipelines=tuple(dict.fromkeys(args.pipeline)),
        results_dir=args.results_dir,
        index_root=args.index_root,
        shards=args.shards,
        reranker=args.reranker,
        reranker_artifact=args.reranker_artifact,
        token_store=args.token_store,
        variants=args.variants,
        concurrency=args.concurrency,
        max_queries=args.max_queries,
        log_level=args.log_level,
        prebuilt=prebuilt,
        encoder=args.encoder,
        encoder_label=args.encoder_label,
        reranker_label=args.reranker_label,
        fusion_models=tuple(dict.fromkeys(args.fusion_model)),
        extra_rerankers=tuple(dict.fromkeys(args.extra_reranker)),
    )


@dataclass(frozen=True, slots=True)
class AbSettings:
    """Flags of `search-ab`: several variants over one dataset, quality and latency side by side."""

    dataset: Path
    split: str
    variants: tuple[str, ...]
    out_json: Path = Path("bench/results/ab_scifact.json")
    out_md: Path = Path("bench/results/ab_scifact.md")
    index_root: Path = Path("var/indexes")
    shards: int = 1
    reranker: str = "none"
    reranker_artifact: Path | None = None
    token_store: Path | None = None
    variants_file: Path | None = None
    max_queries: int | None = None
    warmup: int = 5
    log_level: str = "INFO"
    prebuilt: Mapping[str, Path] = field(default_factory=dict)
    encoder: Path | None = None
    fusion_models: tuple[Path, ...] = ()
    extra_rerankers: tuple[ExtraReranker, ...] = ()


def parse_ab_settings(argv: Sequence[str] | None, reranker_choices: Sequence[str]) -> AbSettings:
    """Parses `search-ab` flags; a bad flag exits 2 with a message naming it."""
    parser = argparse.ArgumentParser(
        prog="search-ab",
        description="Offline A/B: variants over a BEIR split, quality and p50/p95 latency side by side.",
    )
    _add_offline_run_options(parser, reranker_choices)
    parser.add_argument("--variant", action="append", required=True, help="variant name (repeatable)")
    parser.add_argument("--out-json", type=Path, default=Path("bench/results/ab_scifact.json"))
    parser.add_argument("--out-md", type=Path, default=Path("bench/results/ab_scifact.md"))
    parser.add_argument("--warmup", type=int, default=5, help="untimed queries per variant before timing")
    args = parser.parse_args(argv)
    prebuilt = _check_offline_run_options(parser, args)
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return AbSettings(
        dataset=args.dataset,
        split=args.split,
        variants=tuple(dict.fromkeys(args.variant)),
        out_json=args.out_json,
        out_md=args.out_md,
        index_root=args.index_root,
        shards=args.shards,
        reranker=args.reranker,
        reranker_artifact=args.reranker_artifact,
        token_store=args.token_store,
        variants_file=args.variants,
        max_queries=args.max_queries,
        warmup=args.warmup,
        log_level=args.log_level,
        prebuilt=prebuilt,
        encoder=args.encoder,
        fusion_models=tuple(dict.fromkeys(args.fusion_model)),
        extra_rerankers=tuple(dict.fromkeys(args.extra_reranker)),
    )
