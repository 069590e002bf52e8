"""Settings for the retriever server and the index builder: the only place that reads argv or the environment.

Flags win over environment variables (`SEARCH_RETRIEVER_*`), which win over the defaults below.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retriever_service.shards import DEFAULT_MAX_TOP_K
from retriever_service.shards import DEFAULT_QUERY_LIMIT as DEFAULT_MAX_QUERY_CHARS
from search_common.model_kinds import DOCUMENT_ENGINES, STORED_VECTOR_KINDS, DocumentEngine
from search_common.tls import ServerTls, add_server_tls_options, server_tls_from

ENV_PREFIX = "SEARCH_RETRIEVER_"

# Where a dense shard's FAISS index is searched (retriever_service.faiss_index.place_index says how).
FaissDevice = Literal["auto", "cpu", "gpu"]
FAISS_DEVICES: tuple[FaissDevice, ...] = ("auto", "cpu", "gpu")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the retriever server needs, parsed once in `__main__` and passed down."""

    # A shard directory (an index version's shard-<i>/) or an index version directory (all its shards).
    index: Path
    # More of either, served by the same process: shards of one dense and one BM25 index at most.
    more_indexes: tuple[Path, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    port_file: Path | None = None
    max_top_k: int = DEFAULT_MAX_TOP_K
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    reflection: bool = True
    log_level: str = "INFO"
    # torch and FAISS threads; default: every core this process may use.
    threads: int = 0
    # Encoder directory for dense shards; None loads the packaged all-MiniLM-L6-v2.
    encoder: Path | None = None
    device: str = "cpu"
    # Where a dense shard's FAISS index is searched: auto (a GPU when FAISS sees one), cpu or gpu.
    faiss_device: FaissDevice = "auto"
    grace_seconds: float = 5.0
    # Prometheus /metrics on this port (0 picks a free one); None serves no metrics.
    metrics_port: int | None = None
    # TLS (mutual TLS with a client CA) on the gRPC port; None serves plaintext.
    tls: ServerTls | None = None

    def __post_init__(self) -> None:
        if self.max_top_k <= 0:
            raise ValueError(f"--max-top-k must be positive, got {self.max_top_k}")
        if self.max_query_chars <= 0:
            raise ValueError(f"--max-query-chars must be positive, got {self.max_query_chars}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = all cores), got {self.threads}")
        if len(set(self.indexes)) != len(self.indexes):
            raise ValueError("--index names the same directory twice")
        if self.grace_seconds < 0:
            raise ValueError(f"--grace-seconds must be >= 0, got {self.grace_seconds}")
        if self.faiss_device not in FAISS_DEVICES:
            raise ValueError(
                f"--faiss-device must be one of {', '.join(FAISS_DEVICES)}, got {self.faiss_device!r}"
            )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"--metrics-port must be in 0..65535 (or -1 for none), got {self.metrics_port}")

    @property
    def indexes(self) -> tuple[Path, ...]:
        return (self.index, *self.more_indexes)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def effective_threads(self) -> int:
        return self.threads or available_cores()


IndexKind = Literal["dense", "bm25", "late-interaction", "poly-encoder", "bi-encoder"]
# Kinds after dense and bm25 store documents' vectors for a reranker (token stores), built with its model.
INDEX_KINDS = ("dense", "bm25", *STORED_VECTOR_KINDS)


@dataclass(frozen=True, slots=True)
class BuildSettings:
    """Flags of `search-build-index`."""

    corpus: Path
    out: Path
    kind: IndexKind
    num_shards: int = 1
    factory: str = "Flat"
    search_params: str = ""
    name: str | None = None
    batch_size: int = 64
    overwrite: bool = False
    encoder: Path | None = None
    max_length: int = 256
    threads: int = 0
    log_level: str = "INFO"
    document_engine: DocumentEngine = "auto"

    @property
    def effective_threads(self) -> int:
        return self.threads or available_cores()


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _ArgumentParser(argparse.ArgumentParser):
    """Exits 2 with a one-line message (argparse's own behaviour), never a traceback."""


def _env(environ: Mapping[str, str], key: str, default: str) -> str:
    return environ.get(ENV_PREFIX + key, default)


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parses server flags; argparse exits 2 with a message naming a bad flag."""
    env = os.environ if environ is None else environ
    parser = _ArgumentParser(
        prog="search-retriever",
        description="Serve retriever shards (one, or several in one process) over gRPC.",
    )
    parser.add_argument(
        "--index",
        type=Path,
        action="append",
        default=None,
        help="a shard directory (an index version's shard-<i>/) or an index version directory (all its "
        "shards); repeat it to serve several shards, of a dense and a BM25 index, from this one process "
        "(default: SEARCH_RETRIEVER_INDEX, comma-separated)",
    )
    parser.add_argument("--host", default=_env(env, "HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(_env(env, "PORT", "0")), help="0 picks a free port")
    parser.add_argument(
        "--port-file", type=Path, default=None, help="write the bound port here (atomically) once SERVING"
    )
    parser.add_argument("--max-top-k", type=int, default=int(_env(env, "MAX_TOP_K", str(DEFAULT_MAX_TOP_K))))
    parser.add_argument(
        "--max-query-chars", type=int, default=int(_env(env, "MAX_QUERY_CHARS", str(DEFAULT_MAX_QUERY_CHARS)))
    )
    parser.add_argument("--reflection", action=argparse.BooleanOptionalAction, default=True)
    add_server_tls_options(parser)
    parser.add_argument(
        "--log-level",
        default=_env(env, "LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(_env(env, "THREADS", "0")),
        help="torch/FAISS threads (0 = all available cores)",
    )
    parser.add_argument(
        "--encoder",
        type=Path,
        default=_env(env, "ENCODER", "") or None,
        help="encoder directory for a dense shard (default: the packaged all-MiniLM-L6-v2)",
    )
    parser.add_argument("--device", default=_env(env, "DEVICE", "cpu"), help="torch device of the encoder")
    parser.add_argument(
        "--faiss-device",
        default=_env(env, "FAISS_DEVICE", "auto"),
        choices=FAISS_DEVICES,
        help="where FAISS searches a dense shard: auto (a GPU when FAISS sees one), cpu or gpu",
    )
    parser.add_argument("--grace-seconds", type=float, default=5.0)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env(env, "METRICS_PORT", "-1")),
        help="serve Prometheus /metrics here (0 picks a free port; -1, the default, serves none)",
    )
    try:
        args = parser.parse_args(argv)
    except ValueError as exc:  # a bad integer in the environment
        parser.error(str(exc))
    indexes = args.index or [Path(p) for p in _env(env, "INDEX", "").split(",") if p.strip()]
    if not indexes:
        parser.error("--index is required (or set SEARCH_RETRIEVER_INDEX)")
    try:
        return Settings(
            index=indexes[0],
            more_indexes=tuple(indexes[1:]),
            host=args.host,
            port=args.port,
            port_file=args.port_file,
            max_top_k=args.max_top_k,
            max_query_chars=args.max_query_chars,
            reflection=args.reflection,
            log_level=args.log_level,
            threads=args.threads,
            encoder=args.encoder,
            device=args.device,
            faiss_device=args.faiss_device,
            grace_seconds=args.grace_seconds,
            metrics_port=None if args.metrics_port < 0 else args.metrics_port,
            tls=server_tls_from(args),
        )
    except ValueError as exc:
        parser.error(str(exc))


def parse_build_settings(argv: Sequence[str] | None = None) -> BuildSettings:
    """Parses `search-build-index` flags; argparse exits 2 with a message naming a bad flag."""
    parser = _ArgumentParser(
        prog="search-build-index",
        description="Build a dense (FAISS) or BM25 index, or a reranker's token stores (late-interaction, "
        "poly-encoder, bi-encoder).",
    )
    parser.add_argument("--corpus", type=Path, required=True, help="BEIR corpus.jsonl (or its folder)")
    parser.add_argument("--out", type=Path, required=True, help="index version directory to create")
    parser.add_argument("--kind", choices=INDEX_KINDS, default="dense")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument(
        "--factory", default="Flat", help="FAISS factory string: Flat, IVF256,Flat, HNSW32,Flat"
    )
    parser.add_argument("--search-params", default="", help="FAISS ParameterSpace string, e.g. nprobe=16")
    parser.add_argument("--name", default=None, help="index name (default: the corpus folder name)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="dense: bi-encoder directory (default: packaged all-MiniLM-L6-v2); late-interaction, "
        "poly-encoder, bi-encoder: that reranker's artifact (a version, or a root whose newest version is "
        "used; required; `search-packaged-model all-mpnet-base-v2` prints the packaged bi-encoder's)",
    )
    parser.add_argument("--max-length", type=int, default=256, help="document tokens for the encoder")
    parser.add_argument("--threads", type=int, default=0, help="torch/FAISS threads (0 = all cores)")
    parser.add_argument(
        "--document-engine",
        choices=DOCUMENT_ENGINES,
        default="auto",
        help="bi-encoder: what encodes the documents: torch, or its int8-weight ONNX graph one document per "
        "pass (1.6x faster on 2 AVX-512 cores, vectors within a cosine of 0.999, checked at load); auto (the "
        "default) is onnx-int8 on a CPU. The other kinds encode on torch.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )
    args = parser.parse_args(argv)
    for flag, value in (
        ("--shards", args.shards),
        ("--batch-size", args.batch_size),
        ("--max-length", args.max_length),
    ):
        if value <= 0:
            parser.error(f"{flag} must be positive, got {value}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    if args.kind in STORED_VECTOR_KINDS and args.encoder is None:
        parser.error(f"--kind {args.kind} needs --encoder, the {args.kind} model artifact")
    if args.document_engine == "onnx-int8" and args.kind != "bi-encoder":
        parser.error(
            f"--document-engine onnx-int8 is for --kind bi-encoder; --kind {args.kind} encodes on torch"
        )
    return BuildSettings(
        corpus=args.corpus,
        out=args.out,
        kind=args.kind,
        num_shards=args.shards,
        factory=args.factory,
        search_params=args.search_params,
        name=args.name,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        encoder=args.encoder,
        max_length=args.max_length,
        threads=args.threads,
        document_engine=args.document_engine,
        log_level=args.log_level,
    )
