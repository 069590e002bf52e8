"""Settings for the reranker server: the only place that reads argv or the environment.

Flags win over environment variables (`SEARCH_RERANKER_*`), which win over the defaults below. Secrets
(the Redis password) come from the environment only, so they never show in a process listing.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model_runtimes.cross_encoder.onnx_engine import onnx_providers
from model_runtimes.cross_encoder.passes import PASS_SHAPE_CHOICES
from search_common import triton_contract
from search_common.model_kinds import STORED_VECTOR_KINDS
from search_common.tls import (
    ClientTls,
    ServerTls,
    add_client_tls_options,
    add_server_tls_options,
    client_tls_from,
    server_tls_from,
)

ENV_PREFIX = "SEARCH_RERANKER_"

# auto, onnx and torch score a cross-encoder in process (auto: torch where the CPU has AMX-BF16 and the
# artifact holds a torch program, else onnx; see cross_encoder_runtime.choose_engine); triton calls a
# tritonserver; late-interaction scores a ColBERT model in process over documents' stored token vectors,
# poly-encoder a poly-encoder and bi-encoder a larger bi-encoder over documents' stored vectors.
BackendKind = Literal["auto", "onnx", "torch", "triton", "late-interaction", "poly-encoder", "bi-encoder"]
# The backends that score over vectors stored at index time (`--token-store`).
STORED_VECTOR_BACKENDS = STORED_VECTOR_KINDS
BACKENDS = ("auto", "onnx", "torch", "triton", *STORED_VECTOR_BACKENDS)
CacheKind = Literal["lru", "redis", "none"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the reranker needs, parsed once in `__main__` (or built in code) and passed down."""

    backend: BackendKind = "auto"
    # In process: an artifact version directory, or a root whose newest version is used.
    artifact_dir: Path | None = None
    # The stored-vector backends: the documents' vectors from index time (a store, an index version whose
    # shards hold one each, or a root holding the version the model encoded); None encodes documents per
    # request.
    token_store: Path | None = None
    # triton: gRPC address and model name; every call carries this timeout.
    triton_url: str = "127.0.0.1:8001"
    triton_model: str = triton_contract.MODEL_NAME
    triton_timeout_seconds: float = 10.0
    cache: CacheKind = "lru"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str | None = None
    # Verifies a `rediss://` server against this CA bundle (TLS is chosen by the URL scheme).
    redis_ca_file: Path | None = None
    redis_timeout_seconds: float = 0.25
    cache_ttl_seconds: int = 7 * 24 * 3600
    lru_size: int = 100_000
    max_documents: int = 256
    max_query_chars: int = 2_000
    max_document_chars: int = 20_000
    host: str = "127.0.0.1"
    port: int = 0
    port_file: Path | None = None
    reflection: bool = True
    # Prometheus /metrics on this port (0 picks a free one); None serves no metrics.
    metrics_port: int | None = None
    # TLS (mutual TLS with a client CA) on the gRPC port; None serves plaintext.
    tls: ServerTls | None = None
    # TLS (with a client certificate: mutual TLS) to tritonserver's gRPC port; None connects in plaintext.
    triton_tls: ClientTls | None = None
    # In process: requests scored at once, intra-op threads (0: the engine decides, 1 with several batch
    # workers), passes of one request scored at once (0: one per core with single passes), the pass shape
    # (model_runtimes.cross_encoder.passes: auto, single or bucketed) and the rows of a bucketed pass.
    threads: int = 1
    # auto, onnx, torch: where the model scores, "cpu" or "cuda"/"cuda:N" (a GPU nothing can use fails start).
    device: str = "cpu"
    intra_op_threads: int = 0
    batch_workers: int = 0
    pass_shape: str = "auto"
    # In process: start even when --artifact-dir holds no model yet (answering UNAVAILABLE with the root's
    # STATUS file) and load the first version that appears, polling every model_poll_seconds.
    wait_for_model: bool = False
    model_poll_seconds: float = 2.0
    batch_size: int = 32
    # onnx: requests waiting for a scoring thread before RESOURCE_EXHAUSTED.
    max_pending: int = 64
    grace_seconds: float = 5.0
    # How long `serve` waits for the scorer (Triton) to become ready, staying NOT_SERVING meanwhile.
    startup_timeout_seconds: float = 120.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.cache not in ("lru", "redis", "none"):
            raise ValueError(f"cache must be lru, redis or none, got {self.cache!r}")
        if self.embedded and self.artifact_dir is None:
            raise ValueError(f"the {self.backend} backend needs --artifact-dir (a model artifact)")
        if self.token_store is not None and self.backend not in STORED_VECTOR_BACKENDS:
            stored = ", ".join(STORED_VECTOR_BACKENDS)
            raise ValueError(
                f"--token-store goes with a stored-vector backend ({stored}), not {self.backend}"
            )
        for name in (
            "max_documents",
            "max_query_chars",
            "max_document_chars",
            "lru_size",
            "threads",
            "batch_size",
            "max_pending",
            "cache_ttl_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.wait_for_model and not self.embedded:
            raise ValueError("--wait-for-model needs an in-process backend (Triton loads its own models)")
        if self.model_poll_seconds <= 0:
            raise ValueError(f"model_poll_seconds must be positive, got {self.model_poll_seconds}")
        if self.batch_workers < 0:
            raise ValueError(
                f"batch_workers must be positive, or 0 for one per core; got {self.batch_workers}"
            )
        if self.pass_shape not in PASS_SHAPE_CHOICES:
            raise ValueError(
                f"pass_shape must be one of {', '.join(PASS_SHAPE_CHOICES)}, got {self.pass_shape!r}"
            )
        onnx_providers(self.device)  # a malformed device is refused here, with the runtime's own message
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.triton_timeout_seconds <= 0 or self.redis_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")

    @property
    def embedded(self) -> bool:
        """Whether the model is scored in this process (every backend but triton)."""
        return self.backend != "triton"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _env(environ: Mapping[str, str], key: str, default: str) -> str:
    return environ.get(ENV_PREFIX + key, default)


def parse_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    prog: str = "search-reranker",
) -> Settings:
    """Parses server flags; argparse exits 2 with a message naming a bad flag (and `prog`, what took them:
    the gateway's --local-reranker takes the same flags)."""
    env = os.environ if environ is None else environ
    defaults = Settings(backend="triton")
    parser = argparse.ArgumentParser(prog=prog, description="Serve the reranker.")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=_env(env, "BACKEND", "auto"),
        help="in process: onnx (ONNX Runtime), torch (the artifact's bfloat16 program), auto (torch on CPUs "
        "with AMX-BF16 when the artifact has the program, else onnx); triton (a tritonserver); or "
        "late-interaction (a ColBERT artifact, in process, over --token-store); poly-encoder (a poly-encoder "
        "artifact, likewise); bi-encoder (a larger bi-encoder re-scoring, likewise: `search-packaged-model "
        "all-mpnet-base-v2` prints the packaged one's artifact)",
    )
    parser.add_argument("--artifact-dir", type=Path, default=_env(env, "ARTIFACT_DIR", "") or None)
    parser.add_argument(
        "--token-store",
        type=Path,
        default=_env(env, "TOKEN_STORE", "") or None,
        help="late-interaction, poly-encoder, bi-encoder: documents' vectors (search-build-index --kind of "
        "the backend)",
    )
    parser.add_argument("--triton-url", default=_env(env, "TRITON_URL", defaults.triton_url))
    parser.add_argument("--triton-model", default=_env(env, "TRITON_MODEL", defaults.triton_model))
    parser.add_argument(
        "--triton-timeout-seconds", type=float, default=float(_env(env, "TRITON_TIMEOUT_SECONDS", "10"))
    )
    parser.add_argument("--cache", choices=["lru", "redis", "none"], default=_env(env, "CACHE", "lru"))
    parser.add_argument("--redis-url", default=_env(env, "REDIS_URL", defaults.redis_url))
    parser.add_argument("--redis-ca-file", type=Path, default=_env(env, "REDIS_CA_FILE", "") or None)
    parser.add_argument(
        "--redis-timeout-seconds", type=float, default=float(_env(env, "REDIS_TIMEOUT_SECONDS", "0.25"))
    )
    parser.add_argument(
        "--cache-ttl-seconds", type=int, default=int(_env(env, "CACHE_TTL_SECONDS", str(7 * 24 * 3600)))
    )
    parser.add_argument("--lru-size", type=int, default=int(_env(env, "LRU_SIZE", "100000")))
    parser.add_argument("--max-documents", type=int, default=int(_env(env, "MAX_DOCUMENTS", "256")))
    parser.add_argument("--max-query-chars", type=int, default=int(_env(env, "MAX_QUERY_CHARS", "2000")))
    parser.add_argument(
        "--max-document-chars", type=int, default=int(_env(env, "MAX_DOCUMENT_CHARS", "20000"))
    )
    parser.add_argument("--host", default=_env(env, "HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(_env(env, "PORT", "0")), help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, default=None, help="write the bound port here once SERVING")
    parser.add_argument("--reflection", action=argparse.BooleanOptionalAction, default=True)
    add_server_tls_options(parser)
    add_client_tls_options(parser, "--triton-tls", "tritonserver's gRPC port")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env(env, "METRICS_PORT", "-1")),
        help="serve Prometheus /metrics here (0 picks a free port; -1, the default, serves none)",
    )
    parser.add_argument("--threads", type=int, default=int(_env(env, "THREADS", "1")))
    parser.add_argument(
        "--device",
        default=_env(env, "DEVICE", "cpu"),
        help="where an in-process backend scores: cpu, cuda or cuda:N",
    )
    parser.add_argument("--intra-op-threads", type=int, default=int(_env(env, "INTRA_OP_THREADS", "0")))
    parser.add_argument(
        "--batch-workers",
        type=int,
        default=int(_env(env, "BATCH_WORKERS", "0")),
        help="passes of one request scored at once (0: one per core with single passes)",
    )
    parser.add_argument(
        "--wait-for-model",
        action="store_true",
        default=_env(env, "WAIT_FOR_MODEL", "") in ("1", "true"),
        help="start even when --artifact-dir holds no model yet: answer UNAVAILABLE (with the root's STATUS "
        "file, e.g. training progress) and load the first version that appears",
    )
    parser.add_argument(
        "--pass-shape",
        choices=PASS_SHAPE_CHOICES,
        default=_env(env, "PASS_SHAPE", "auto"),
        help="single: each pair a forward pass of its own; bucketed: passes of --batch-size rows in fixed "
        "length buckets (engines whose rows do not interact); auto: single on a CPU, bucketed on a GPU. "
        "Either way a pair's score does not depend on the pairs scored with it",
    )
    parser.add_argument("--batch-size", type=int, default=int(_env(env, "BATCH_SIZE", "32")))
    parser.add_argument("--max-pending", type=int, default=int(_env(env, "MAX_PENDING", "64")))
    parser.add_argument("--grace-seconds", type=float, default=float(_env(env, "GRACE_SECONDS", "5")))
    parser.add_argument(
        "--startup-timeout-seconds", type=float, default=float(_env(env, "STARTUP_TIMEOUT_SECONDS", "120"))
    )
    parser.add_argument("--log-level", default=_env(env, "LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    try:
        return Settings(
            backend=args.backend,
            artifact_dir=args.artifact_dir,
            token_store=args.token_store,
            triton_url=args.triton_url,
            triton_model=args.triton_model,
            triton_timeout_seconds=args.triton_timeout_seconds,
            cache=args.cache,
            redis_url=args.redis_url,
            redis_password=env.get(ENV_PREFIX + "REDIS_PASSWORD") or None,
            redis_ca_file=args.redis_ca_file,
            redis_timeout_seconds=args.redis_timeout_seconds,
            cache_ttl_seconds=args.cache_ttl_seconds,
            lru_size=args.lru_size,
            max_documents=args.max_documents,
            max_query_chars=args.max_query_chars,
            max_document_chars=args.max_document_chars,
            host=args.host,
            port=args.port,
            port_file=args.port_file,
            reflection=args.reflection,
            metrics_port=None if args.metrics_port < 0 else args.metrics_port,
            threads=args.threads,
            device=args.device,
            intra_op_threads=args.intra_op_threads,
            batch_workers=args.batch_workers,
            pass_shape=args.pass_shape,
            wait_for_model=args.wait_for_model,
            batch_size=args.batch_size,
            max_pending=args.max_pending,
            grace_seconds=args.grace_seconds,
            startup_timeout_seconds=args.startup_timeout_seconds,
            log_level=args.log_level,
            tls=server_tls_from(args),
            triton_tls=client_tls_from(args, "--triton-tls"),
        )
    except ValueError as exc:
        parser.error(str(exc))
