"""Settings of search-demo, parsed once from argv: the stack it starts and the queries it shows."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEMO_QUERIES = (
    "how do I parse command line arguments",
    "read a gzip compressed file",
    "compute the sha256 hash of a file",
    "run a subprocess and capture its output",
    "format a date as ISO 8601",
)
# The packaged all-mpnet-base-v2 re-scoring the top 30, fused with the first stage (RRF 0.3, chosen on SciFact
# dev); the zero-label ColBERT helps only lightly fused over the top 10 (dev); see gateway/variants.yaml.
DEMO_RERANKED_VARIANT = "hybrid30+mpnet-fused"
COLBERT_VARIANT = "hybrid10+colbert-light"
CROSS_ENCODER_VARIANT = "hybrid30+ce"
RERANKERS = ("mpnet", "colbert", "none", "auto", "onnx", "torch", "triton")


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """Flags of `search-demo`."""

    var_dir: Path = Path("var")
    # Your own documents (a folder, a .jsonl file or a BEIR folder) instead of the stdlib corpus.
    corpus: Path | None = None
    queries: tuple[str, ...] = DEMO_QUERIES
    top_k: int = 5
    variant: str = DEMO_RERANKED_VARIANT
    reranker: str = "mpnet"
    cache: str = "lru"
    reranker_artifact: Path | None = None
    dense_shards: int = 2
    # "none": the gateway searches every shard in its own process (small hosts: no retriever hop at all,
    # bench/results/perf.md); "one": a single retriever process serves every shard; "per-shard": one
    # process per shard, as a cluster runs them.
    retriever_processes: str = "none"
    keep_running: bool = False
    startup_timeout_seconds: float = 300.0
    request_timeout_seconds: float = 10.0
    retriever_threads: int = 1
    log_level: str = "WARNING"
    # Serve the supervisor's restart counts (search_stack_restarts_total) on this port; None: not served.
    metrics_port: int | None = None

    @property
    def late_interaction(self) -> bool:
        """Whether the second stage is ColBERT."""
        return self.reranker == "colbert"

    @property
    def rescoring(self) -> bool:
        """Whether the second stage is the re-scoring bi-encoder (untrained: nothing to train or cache)."""
        return self.reranker == "mpnet"


def _default_variant(reranker: str) -> str:
    variants = {"none": "hybrid", "mpnet": DEMO_RERANKED_VARIANT, "colbert": COLBERT_VARIANT}
    return variants.get(reranker, CROSS_ENCODER_VARIANT)


def parse_demo_settings(argv: Sequence[str] | None = None) -> DemoSettings:
    """Parses `search-demo` flags; a bad flag exits 2 with a message naming it."""
    parser = argparse.ArgumentParser(
        prog="search-demo",
        description="Bring the whole stack up on loopback over the stdlib corpus and run example queries.",
    )
    parser.add_argument("--var", type=Path, default=Path("var"), help="where corpus, indexes and logs go")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="search your own documents: a folder of .txt/.md/.rst/.html files, a .jsonl file (BEIR "
        "layout) or a BEIR folder; indexes and the cross-encoder are built for it once, cached by content",
    )
    parser.add_argument("--query", action="append", default=None, help="query to run (repeatable)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--variant",
        default=None,
        help=f"default: {DEMO_RERANKED_VARIANT}; {COLBERT_VARIANT} with --reranker colbert, "
        f"{CROSS_ENCODER_VARIANT} with a cross-encoder; hybrid with --reranker none",
    )
    parser.add_argument(
        "--reranker",
        default="mpnet",
        choices=RERANKERS,
        help="mpnet (the default): the packaged all-mpnet-base-v2 re-scoring the first stage's top 30 over "
        "vectors stored once per corpus, untrained; colbert: a zero-label ColBERT trained on the corpus; a "
        "zero-label cross-encoder in process: onnx (ONNX Runtime), torch (bfloat16 torch program), auto "
        "(torch on CPUs with AMX-BF16, else onnx); triton: that cross-encoder on a local tritonserver; none: "
        "first stage only",
    )
    parser.add_argument(
        "--cache", default="lru", choices=["lru", "redis", "none"], help="the reranker's score cache"
    )
    parser.add_argument(
        "--reranker-artifact",
        type=Path,
        default=None,
        help="reranker artifact, a bi-encoder, ColBERT or cross-encoder one as --reranker says (default: the "
        "packaged all-mpnet-base-v2 for mpnet, else trained on the corpus on first use, then cached)",
    )
    parser.add_argument("--dense-shards", type=int, default=2)
    parser.add_argument(
        "--retriever-processes",
        choices=["none", "one", "per-shard"],
        default="none",
        help="none: the gateway searches the indexes itself (default; the fewest hops on a small host); "
        "one: one retriever process for every shard; per-shard: one process per shard, as a cluster",
    )
    parser.add_argument("--keep-running", action="store_true", help="keep the stack up until Ctrl-C")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds per service start")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-query deadline in seconds")
    parser.add_argument("--retriever-threads", type=int, default=1, help="torch/FAISS threads per shard")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve the stack supervisor's restart counts for Prometheus on this port (0: a free one)",
    )
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )
    args = parser.parse_args(argv)
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        parser.error(f"--metrics-port must be within 0..65535, got {args.metrics_port}")
    for flag, value in (
        ("--top-k", args.top_k),
        ("--dense-shards", args.dense_shards),
        ("--retriever-threads", args.retriever_threads),
    ):
        if value <= 0:
            parser.error(f"{flag} must be positive, got {value}")
    if args.timeout <= 0 or args.startup_timeout <= 0:
        parser.error("--timeout and --startup-timeout must be positive")
    if args.corpus is not None and not args.corpus.exists():
        parser.error(f"--corpus {args.corpus}: no such file or folder")
    # The example queries are about the stdlib; on your documents, only yours (or none: the stack stays up).
    queries = tuple(args.query) if args.query else (() if args.corpus is not None else DEMO_QUERIES)
    if any(not q.strip() for q in queries):
        parser.error("--query must not be empty")
    return DemoSettings(
        var_dir=args.var,
        corpus=args.corpus,
        queries=queries,
        top_k=args.top_k,
        variant=args.variant or _default_variant(args.reranker),
        reranker=args.reranker,
        cache=args.cache,
        reranker_artifact=args.reranker_artifact,
        dense_shards=args.dense_shards,
        retriever_processes=args.retriever_processes,
        keep_running=args.keep_running or not queries,
        startup_timeout_seconds=args.startup_timeout,
        request_timeout_seconds=args.timeout,
        retriever_threads=args.retriever_threads,
        log_level=args.log_level,
        metrics_port=args.metrics_port,
    )
