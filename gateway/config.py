"""Settings for the gateway: the only place that reads argv, the environment or the deployment YAML.

Downstream addresses come from flags (`--dense host:port,host:port --bm25 host:port --reranker host:port`,
and `--reranker-route MODEL=host:port` for a model served by a reranker of its own) or from a YAML file given
with `--config`:

    retrievers:
      dense: [127.0.0.1:7001, 127.0.0.1:7002]
      bm25: [127.0.0.1:7003]
    reranker: 127.0.0.1:7010      # optional
    reranker_routes:              # optional: a model served by a reranker of its own
      colbert-minilm: 127.0.0.1:7011

A group may instead be searched in the gateway's own process (`--index DIR`, or `indexes:` in the file): the
index version directories, or shard directories, a retriever's `--index` takes. Likewise the reranker
(`--local-reranker "<search-reranker flags>"`). Small hosts save a gRPC hop per query and a process each; a
cluster still runs the shards and the reranker as pods of their own.

Flags win over the file, which wins over `SEARCH_GATEWAY_*` environment variables and the defaults below.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, NoReturn

import yaml

from gateway.variants import VariantBounds
from search_common.ports import QUERY_ENCODER_ENGINES, QueryEncoderEngine
from search_common.tls import (
    ClientTls,
    ServerTls,
    add_client_tls_options,
    add_server_tls_options,
    client_tls_from,
    server_tls_from,
)

if TYPE_CHECKING:
    from reranker_service.config import Settings as RerankerSettings

ENV_PREFIX = "SEARCH_GATEWAY_"
GROUPS = ("dense", "bm25")
# `--query-encoder packaged`: the all-MiniLM-L6-v2 the project ships, which a dense shard started without
# --encoder loads (so the images need no model mount for it).
PACKAGED_ENCODER = "packaged"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway needs, parsed once in `__main__` and passed down."""

    # group name -> shard addresses ("host:port"), one per shard of that group's index
    retrievers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reranker: str | None = None
    # reranker model name -> the address of the reranker serving it (others go to `reranker`)
    reranker_routes: Mapping[str, str] = field(default_factory=dict)
    # Index (or shard) directories searched in this process instead of over gRPC; their kinds are groups.
    indexes: tuple[Path, ...] = ()
    # A reranker run in this process instead of `reranker` (search-reranker's settings; its serving ones,
    # such as the port, are not used).
    local_reranker: RerankerSettings | None = None
    host: str = "127.0.0.1"
    port: int = 0
    port_file: Path | None = None
    max_top_k: int = 100
    max_query_chars: int = 2048
    max_retrieval_depth: int = 1000
    max_rerank_depth: int = 200
    max_sequence_length: int = 512
    # Budget for a request whose client set no deadline.
    default_deadline_seconds: float = 2.0
    # Seconds kept back from each downstream timeout for the gateway's own work: the floor of a margin
    # learned from the gateway's observed answering cost (gateway.overload), which may grow to the cap.
    deadline_margin_seconds: float = 0.02
    deadline_margin_cap_seconds: float = 1.0
    # Reranks in flight at most; more are shed at once, answered from the first stage (0: no bound).
    max_reranks_in_flight: int = 32
    # Shed reranks that would not answer in time (False: send every one, as before; for comparisons).
    shed_reranks: bool = True
    # Share of the remaining budget kept for the reranker when a request is reranked.
    rerank_share: float = 0.5
    # Optional caps, in seconds, on each stage's share of the budget (None: the share alone decides).
    retrieve_timeout_seconds: float | None = None
    rerank_timeout_seconds: float | None = None
    snippet_chars: int = 240
    # None selects the packaged gateway/variants.yaml.
    variants: Path | None = None
    reflection: bool = True
    # TLS (mutual TLS with a client CA) on the gateway's port; None serves plaintext.
    tls: ServerTls | None = None
    # TLS to the retrievers and the reranker (with a client certificate for mTLS); None is plaintext.
    downstream_tls: ClientTls | None = None
    # Prometheus /metrics on this port (0 picks a free one); None serves no metrics.
    metrics_port: int | None = None
    log_level: str = "INFO"
    grace_seconds: float = 5.0
    # How long to wait at startup for every group to have a shard answering GetShardInfo.
    startup_timeout_seconds: float = 120.0
    # How often the variants file is checked for changes (it is also reloaded on SIGHUP).
    variants_poll_seconds: float = 2.0
    # Bi-encoder directory (or PACKAGED_ENCODER) to embed each query once here and send the vector to the
    # dense shards; None leaves the embedding to every dense shard.
    query_encoder: Path | Literal["packaged"] | None = None
    # Threads for the query encoder; 0 = the engine's default (every core for torch, 1 for onnx).
    query_encoder_threads: int = 0
    # What runs it: ONNX Runtime (its export, checked against torch at load), torch, or auto (onnx on CPU).
    query_encoder_engine: QueryEncoderEngine = "auto"
    # Learned-fusion artifacts (gateway/learned_fusion.py) that variants with `fusion: learned` may name.
    fusion_models: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        for group, addresses in self.retrievers.items():
            if group not in GROUPS:
                raise ValueError(f"unknown retriever group {group!r}; expected one of {', '.join(GROUPS)}")
            for address in addresses:
                _check_address(address, f"--{group}")
        if not any(self.retrievers.values()) and not self.indexes:
            raise ValueError(
                "no retrievers configured: give --dense and/or --bm25 addresses, --index directories, "
                "or --config"
            )
        if len(set(self.indexes)) != len(self.indexes):
            raise ValueError("--index names the same directory twice")
        for index in self.indexes:
            if not index.is_dir():
                raise ValueError(f"--index {index}: no such directory")
        if self.reranker is not None:
            _check_address(self.reranker, "--reranker")
            if self.local_reranker is not None:
                raise ValueError("give --reranker (an address) or --local-reranker, not both")
        if self.local_reranker is not None and self.local_reranker.wait_for_model:
            raise ValueError(
                "--local-reranker: --wait-for-model is the reranker service's; the gateway loads "
                "its model before serving"
            )
        for model, address in self.reranker_routes.items():
            if not model or "@" in model or "=" in model:
                raise ValueError(f"--reranker-route: {model!r} is not a reranker model name")
            _check_address(address, f"--reranker-route {model}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"--metrics-port must be in 0..65535 (or -1 for none), got {self.metrics_port}")
        for name, value in (
            ("--max-top-k", self.max_top_k),
            ("--max-query-chars", self.max_query_chars),
            ("--max-retrieval-depth", self.max_retrieval_depth),
            ("--max-rerank-depth", self.max_rerank_depth),
            ("--snippet-chars", self.snippet_chars),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.default_deadline_seconds <= 0:
            raise ValueError(f"--default-deadline must be positive, got {self.default_deadline_seconds}")
        if self.deadline_margin_seconds < 0:
            raise ValueError(f"--deadline-margin must be >= 0, got {self.deadline_margin_seconds}")
        if self.deadline_margin_cap_seconds < self.deadline_margin_seconds:
            raise ValueError(
                f"--deadline-margin-cap ({self.deadline_margin_cap_seconds}) must be >= --deadline-margin "
                f"({self.deadline_margin_seconds})"
            )
        if self.max_reranks_in_flight < 0:
            raise ValueError(f"--max-reranks-in-flight must be >= 0, got {self.max_reranks_in_flight}")
        if not 0 <= self.rerank_share < 1:
            raise ValueError(f"--rerank-share must be within [0, 1), got {self.rerank_share}")
        for flag, cap in (
            ("--retrieve-timeout", self.retrieve_timeout_seconds),
            ("--rerank-timeout", self.rerank_timeout_seconds),
        ):
            if cap is not None and cap <= 0:
                raise ValueError(f"{flag} must be positive, got {cap}")
        if self.variants_poll_seconds <= 0:
            raise ValueError(f"--variants-poll must be positive, got {self.variants_poll_seconds}")
        if self.query_encoder_engine not in QUERY_ENCODER_ENGINES:
            raise ValueError(
                f"--query-encoder-engine must be one of {', '.join(QUERY_ENCODER_ENGINES)}, "
                f"got {self.query_encoder_engine!r}"
            )
        if self.query_encoder_threads < 0:
            raise ValueError(f"--query-encoder-threads must be >= 0, got {self.query_encoder_threads}")
        if self.grace_seconds < 0 or self.startup_timeout_seconds <= 0:
            raise ValueError("--grace-seconds must be >= 0 and --startup-timeout positive")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def variant_bounds(self) -> VariantBounds:
        return VariantBounds(self.max_retrieval_depth, self.max_rerank_depth, self.max_sequence_length)


def _check_address(address: str, flag: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{flag}: {address!r} is not a host:port address")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class _Deployment(NamedTuple):
    """What a `--config` file names."""

    retrievers: dict[str, tuple[str, ...]]
    reranker: str | None
    reranker_routes: dict[str, str]
    indexes: tuple[Path, ...]


def _read_config(path: Path, fail: _Fail) -> _Deployment:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"--config {path}: cannot read ({exc.strerror})")
    except yaml.YAMLError as exc:
        fail(f"--config {path}: not valid YAML ({exc})")
    if not isinstance(data, dict):
        fail(f"--config {path}: expected a mapping with 'retrievers' (and optionally 'reranker')")
    unknown = sorted(set(data) - set(_Deployment._fields))
    if unknown:
        fail(
            f"--config {path}: unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(_Deployment._fields)}"
        )
    groups: dict[str, tuple[str, ...]] = {}
    raw_groups = data.get("retrievers") or {}
    if not isinstance(raw_groups, dict):
        fail(f"--config {path}: 'retrievers' must map a group (dense, bm25) to a list of host:port")
    for group, addresses in raw_groups.items():
        if isinstance(addresses, str):
            addresses = [addresses]
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            fail(f"--config {path}: retrievers.{group} must be a list of host:port strings")
        groups[str(group)] = tuple(addresses)
    reranker = data.get("reranker")
    if reranker is not None and not isinstance(reranker, str):
        fail(f"--config {path}: 'reranker' must be a host:port string")
    routes = data.get("reranker_routes") or {}
    if not isinstance(routes, dict) or not all(isinstance(a, str) for a in routes.values()):
        fail(f"--config {path}: 'reranker_routes' must map a reranker model name to a host:port string")
    indexes = data.get("indexes") or []
    if not isinstance(indexes, list) or not all(isinstance(i, str) for i in indexes):
        fail(f"--config {path}: 'indexes' must be a list of index directories")
    return _Deployment(
        groups,
        reranker,
        {str(model): address for model, address in routes.items()},
        # Relative to the file, as a deployment YAML beside its indexes would name them.
        tuple(path.parent / i for i in indexes),
    )


class _Fail:
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._parser = parser

    def __call__(self, message: str) -> NoReturn:
        self._parser.error(message)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    def env(key: str, default: str) -> str:
        return environ.get(ENV_PREFIX + key, default)

    parser = argparse.ArgumentParser(
        prog="search-gateway", description="Serve search.v1.SearchService: fan-out, merge, rerank."
    )
    down = parser.add_argument_group("downstream services")
    down.add_argument("--config", type=Path, default=env("CONFIG", "") or None, help="deployment YAML")
    down.add_argument("--dense", default=env("DENSE", ""), help="dense shard addresses, comma-separated")
    down.add_argument("--bm25", default=env("BM25", ""), help="BM25 shard addresses, comma-separated")
    down.add_argument(
        "--index",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help="an index version (or shard) directory to search in this process instead of over gRPC, as a "
        "retriever's --index (repeatable; its kind, dense or bm25, is the group; the flags replace the "
        "environment's comma-separated list and the file's)",
    )
    down.add_argument("--reranker", default=env("RERANKER", "") or None, help="reranker host:port")
    down.add_argument(
        "--local-reranker",
        default=env("LOCAL_RERANKER", "") or None,
        metavar="FLAGS",
        help="run the reranker in this process instead of --reranker, configured with search-reranker's "
        'flags in one string, e.g. "--backend late-interaction --artifact-dir var/models/colbert '
        '--token-store var/indexes/colbert" (a new model version needs a restart here)',
    )
    down.add_argument(
        "--reranker-route",
        action="append",
        default=None,
        metavar="MODEL=HOST:PORT",
        help="the reranker serving one model, e.g. colbert-minilm=127.0.0.1:7011 (repeatable; variants "
        "naming other models go to --reranker; the flags replace the environment's comma-separated list)",
    )
    down.add_argument(
        "--query-encoder",
        default=env("QUERY_ENCODER", "") or None,
        metavar="PATH",
        help="bi-encoder directory of the dense index (or 'packaged'): embed each query once here and "
        "send the vector to the dense shards (default: each dense shard embeds the query)",
    )
    down.add_argument(
        "--query-encoder-threads",
        type=int,
        default=int(env("QUERY_ENCODER_THREADS", "0")),
        help="threads for the query encoder (0 = the engine's default: all cores for torch, 1 for onnx)",
    )
    down.add_argument(
        "--query-encoder-engine",
        choices=QUERY_ENCODER_ENGINES,
        default=env("QUERY_ENCODER_ENGINE", "auto"),
        help="what embeds queries: onnx (the encoder exported at start and checked against torch), torch, "
        "or auto (onnx on a CPU)",
    )
    down.add_argument(
        "--fusion-model",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help="learned-fusion artifact that variants with 'fusion: learned' name (repeatable; the flags "
        "replace the environment's comma-separated list)",
    )
    srv = parser.add_argument_group("server")
    srv.add_argument("--host", default=env("HOST", "127.0.0.1"))
    srv.add_argument("--port", type=int, default=int(env("PORT", "0")), help="0 picks a free port")
    srv.add_argument("--port-file", type=Path, default=None, help="write the bound port here once SERVING")
    srv.add_argument("--reflection", action=argparse.BooleanOptionalAction, default=True)
    add_server_tls_options(srv)
    add_client_tls_options(down, "--tls", "the downstream servers")
    srv.add_argument(
        "--metrics-port", type=int, default=int(env("METRICS_PORT", "-1")), help="Prometheus port; -1 = none"
    )
    srv.add_argument("--grace-seconds", type=float, default=5.0)
    srv.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for retrievers")
    srv.add_argument(
        "--log-level",
        default=env("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    lim = parser.add_argument_group("limits and budgets")
    lim.add_argument("--max-top-k", type=int, default=100)
    lim.add_argument("--max-query-chars", type=int, default=2048)
    lim.add_argument("--max-retrieval-depth", type=int, default=1000)
    lim.add_argument("--max-rerank-depth", type=int, default=200)
    lim.add_argument("--default-deadline", type=float, default=2.0, help="seconds, when the client sets none")
    lim.add_argument(
        "--deadline-margin",
        type=float,
        default=0.02,
        help="least seconds kept back from each deadline to answer with what the gateway has; the margin "
        "grows with the observed cost of answering (event-loop lag) up to --deadline-margin-cap",
    )
    lim.add_argument("--deadline-margin-cap", type=float, default=1.0, help="most seconds kept back")
    lim.add_argument(
        "--max-reranks-in-flight",
        type=int,
        default=32,
        help="reranks sent and not yet answered, at most; more are shed at once with a first-stage answer "
        "(0: no bound; a rerank is also shed when recent ones took longer than the time left)",
    )
    lim.add_argument(
        "--shed-reranks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shed reranks that would not answer in time (--no-shed-reranks sends every one)",
    )
    lim.add_argument("--rerank-share", type=float, default=0.5, help="budget share kept for reranking")
    lim.add_argument("--retrieve-timeout", type=float, default=None, help="cap on the retrieval stage, s")
    lim.add_argument("--rerank-timeout", type=float, default=None, help="cap on the rerank stage, s")
    lim.add_argument("--variants", type=Path, default=env("VARIANTS", "") or None, help="variants YAML")
    lim.add_argument(
        "--variants-poll", type=float, default=2.0, help="seconds between checks of the variants file"
    )
    return parser


def _query_encoder(value: str | None) -> Path | Literal["packaged"] | None:
    if value is None:
        return None
    return "packaged" if value == PACKAGED_ENCODER else Path(value)


def _reranker_settings(flags: str, environ: Mapping[str, str]) -> RerankerSettings:
    """search-reranker's settings from --local-reranker's flags (exits 2 naming a bad one)."""
    from reranker_service.config import parse_settings as parse_reranker_settings

    try:
        argv = shlex.split(flags)
    except ValueError as exc:  # unbalanced quotes
        raise ValueError(f"--local-reranker {flags!r}: {exc}") from None
    return parse_reranker_settings(argv, environ, prog="search-gateway --local-reranker")


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parses gateway flags; a bad flag or config exits 2 with a message naming it."""
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    env_fusion_models = environ.get(ENV_PREFIX + "FUSION_MODELS", "")
    env_routes = environ.get(ENV_PREFIX + "RERANKER_ROUTES", "")
    env_indexes = environ.get(ENV_PREFIX + "INDEXES", "")
    fail = _Fail(parser)
    try:
        args = parser.parse_args(argv)
    except ValueError as exc:  # a bad number in the environment
        fail(str(exc))
    groups: dict[str, tuple[str, ...]] = {}
    reranker: str | None = None
    routes: dict[str, str] = {}
    indexes = tuple(Path(i) for i in _split(env_indexes))
    if args.config is not None:
        deployment = _read_config(args.config, fail)
        groups, reranker, routes = deployment.retrievers, deployment.reranker, deployment.reranker_routes
        indexes = deployment.indexes or indexes
    if args.index is not None:
        indexes = tuple(args.index)
    for group in GROUPS:
        flagged = _split(getattr(args, group))
        if flagged:
            groups[group] = flagged
    if args.reranker is not None:
        reranker = args.reranker
    flagged_routes = args.reranker_route if args.reranker_route is not None else _split(env_routes)
    if flagged_routes:
        routes = {}  # flags (or the environment) replace the file's routes
    for route in flagged_routes:
        model, sep, address = route.partition("=")
        if not sep:
            fail(f"--reranker-route {route!r}: expected MODEL=HOST:PORT")
        if model.strip() in routes:
            fail(f"--reranker-route: model {model.strip()!r} is routed twice")
        routes[model.strip()] = address.strip()
    try:
        return Settings(
            retrievers={g: a for g, a in groups.items() if a},
            reranker=reranker,
            reranker_routes=routes,
            indexes=indexes,
            local_reranker=None
            if args.local_reranker is None
            else _reranker_settings(args.local_reranker, environ),
            host=args.host,
            port=args.port,
            port_file=args.port_file,
            max_top_k=args.max_top_k,
            max_query_chars=args.max_query_chars,
            max_retrieval_depth=args.max_retrieval_depth,
            max_rerank_depth=args.max_rerank_depth,
            default_deadline_seconds=args.default_deadline,
            deadline_margin_seconds=args.deadline_margin,
            deadline_margin_cap_seconds=args.deadline_margin_cap,
            max_reranks_in_flight=args.max_reranks_in_flight,
            shed_reranks=args.shed_reranks,
            rerank_share=args.rerank_share,
            retrieve_timeout_seconds=args.retrieve_timeout,
            rerank_timeout_seconds=args.rerank_timeout,
            variants=args.variants,
            reflection=args.reflection,
            metrics_port=None if args.metrics_port < 0 else args.metrics_port,
            log_level=args.log_level,
            grace_seconds=args.grace_seconds,
            startup_timeout_seconds=args.startup_timeout,
            variants_poll_seconds=args.variants_poll,
            query_encoder=_query_encoder(args.query_encoder),
            query_encoder_threads=args.query_encoder_threads,
            query_encoder_engine=args.query_encoder_engine,
            fusion_models=tuple(
                dict.fromkeys(args.fusion_model or [Path(p) for p in _split(env_fusion_models)])
            ),
            tls=server_tls_from(args),
            downstream_tls=client_tls_from(args, "--tls"),
        )
    except ValueError as exc:
        fail(str(exc))
