"""`search-demo`: the embedded default, in one command, on this machine.

Builds (once, cached under var/) the stdlib documentation corpus, a 2-shard dense index and a BM25 index;
starts the reranker and the gateway, which searches the indexes in its own process (`--retriever-processes
one|per-shard` starts retriever processes instead), all on free loopback ports; waits for health SERVING;
runs example queries through the gateway over gRPC and prints ranked results with per-stage timings; then
stops every process (SIGTERM, then SIGKILL after a grace period), also on Ctrl-C or failure. The gateway's
default variant is the one the demo shows, so `search-client` without `--variant` ranks as the demo does.

The default second stage is the packaged all-mpnet-base-v2 re-scoring the first stage's top 30, fused with
it (`operations.demo_rescorer`): nothing is trained, but each document's vector is stored once per corpus.
With `--reranker colbert` a zero-label ColBERT model (`operations.demo_colbert`, trained in the PyLate
environment on the corpus's own pseudo-queries) and with `--reranker auto|onnx|torch|triton` the zero-label
cross-encoder are trained on first use, then cached. While the vectors are stored or the model trains (in the
background: `operations.demo_reranker`), the stack already answers on the first stage, flagged degraded with
the reason and the progress; once the model is ready (a trained one only if it passes its publish gate) it is
swapped in and its figures printed. Without --keep-running the demo then shows the same queries re-ranked.
Once up, the stack is supervised (`ServiceStack.supervise`): a shard, the reranker, the gateway, tritonserver
or redis-server that dies is restarted on its own port with backoff, logged, and counted (`--metrics-port`
serves the counts).

    search-demo                                  # all-mpnet-base-v2 re-scoring, LRU score cache
    search-demo --reranker colbert               # a zero-label ColBERT trained on the corpus instead
    search-demo --reranker auto                  # the zero-label cross-encoder in process instead
    search-demo --reranker triton --cache redis  # a real tritonserver and redis-server on loopback
    search-demo --reranker none                  # first stage only
    search-demo --keep-running                   # leave the stack up for `search-client --target ...`
    search-demo --corpus ~/notes                 # your own documents (.txt/.md/.rst/.html, .jsonl, BEIR)
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from prometheus_client import start_http_server
from search.v1 import search_service_pb2, search_service_pb2_grpc

from corpora.stdlib import ensure_stdlib_corpus
from corpora.user_documents import CorpusError, build_user_corpus
from evaluation.offline_stack import ensure_index
from operations.client_cli import format_response
from operations.demo_colbert import LateInteractionTraining, ensure_token_store
from operations.demo_config import DemoSettings, parse_demo_settings
from operations.demo_reranker import (
    BackgroundTraining,
    CrossEncoderTraining,
    describe_gate,
    warn_if_refused,
)
from operations.demo_rescorer import RescorerPreparation, describe_rescorer
from operations.launch import LocalServiceError
from operations.processes import ServiceStack, ServiceStartError, wait_for_serving
from retriever_service.build_index import BuildError
from search_common.artifacts import ArtifactError, read_manifest, resolve_version
from search_common.grpc_server import message_size_options
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)

RERANKER_SERVICE = "search.v1.RerankerService"


def _corpus(settings: DemoSettings) -> Path:
    """The corpus.jsonl the stack serves: the user's documents (`--corpus`), or the stdlib's."""
    if settings.corpus is not None:
        return build_user_corpus(settings.corpus, settings.var_dir / "corpus")
    return ensure_stdlib_corpus(settings.var_dir / "corpus" / "stdlib")


def _build_artifacts(settings: DemoSettings, corpus: Path) -> tuple[Path, Path]:
    from model_runtimes.bi_encoder import BiEncoder

    index_root = settings.var_dir / "indexes"
    encoder = BiEncoder.load(_query_encoder_dir())
    dense = ensure_index(
        corpus,
        index_root,
        kind="dense",
        num_shards=settings.dense_shards,
        encoder=encoder,
        dataset_name=corpus.parent.name,
    )
    bm25 = ensure_index(corpus, index_root, kind="bm25", dataset_name=corpus.parent.name)
    return dense, bm25


def _query_encoder_dir() -> Path:
    """The encoder the dense index is built and served with (`_build_artifacts`: the packaged one)."""
    from model_runtimes.bi_encoder import default_model_dir

    return default_model_dir()


def _models_root(settings: DemoSettings) -> Path:
    if settings.late_interaction:
        return settings.var_dir / "models" / "colbert-zero-label"
    return settings.var_dir / "models" / "cross-encoder-default"


def _token_root(settings: DemoSettings, corpus: Path) -> Path:
    """Where the corpus's token stores go, one version per stored-vector model."""
    kind = "bi-encoder" if settings.rescoring else "late-interaction"
    return settings.var_dir / "indexes" / corpus.parent.name / kind


def _ready_reranker_artifact(settings: DemoSettings, corpus: Path) -> Path | None:
    """The artifact to serve now: the one named, or the cached default model; None when one must train."""
    if settings.rescoring:
        from model_runtimes.bi_encoder_rescorer import read_rescorer_manifest
        from model_runtimes.packaged_models import packaged_mpnet

        named = settings.reranker_artifact
        artifact = resolve_version(named) if named is not None else packaged_mpnet()
        manifest = read_rescorer_manifest(artifact, verify=False)  # the reranker verifies when it loads
        if not (_token_root(settings, corpus) / manifest["version"]).is_dir():
            return None  # the background work stores the documents' vectors
        print(f"reranker: {describe_rescorer(manifest)}")
        return artifact
    if settings.reranker_artifact is not None:
        warn_if_refused(settings.reranker_artifact)
        if settings.late_interaction:
            print("storing the documents' token vectors for the named ColBERT model (once per model)...")
            ensure_token_store(corpus, _token_root(settings, corpus), settings.reranker_artifact)
        return settings.reranker_artifact
    if settings.late_interaction:
        from training.late_interaction.zero_label import ZeroLabelRecipe, cached_model

        cached = cached_model(corpus, _models_root(settings), ZeroLabelRecipe())
        if cached is None or not (_token_root(settings, corpus) / cached.name).is_dir():
            return None  # the background work finds the cached model and stores its tokens
    else:
        from training.cross_encoder.default_model.build import cached_default_model

        cached = cached_default_model(corpus, _models_root(settings))
    if cached is not None:
        print(f"reranker: {cached.name}, {describe_gate(read_manifest(cached))}")
    return cached


def _background_training(settings: DemoSettings, corpus: Path, run_dir: Path) -> BackgroundTraining:
    serving_root = run_dir / "reranker-models"
    if settings.rescoring:
        return RescorerPreparation(
            corpus,
            settings.var_dir / "models",
            serving_root,
            store_root=_token_root(settings, corpus),
            artifact_dir=settings.reranker_artifact,
        )
    if settings.late_interaction:
        return LateInteractionTraining(
            corpus,
            _models_root(settings),
            serving_root,
            token_root=_token_root(settings, corpus),
            log_path=run_dir / "colbert-training.log",
        )
    return CrossEncoderTraining(corpus, _models_root(settings), serving_root)


def _train_now(settings: DemoSettings, corpus: Path) -> Path:
    """The default model, trained here before anything starts (Triton loads only models that exist)."""
    from training.cross_encoder.default_model.build import ensure_default_model

    return ensure_default_model(corpus, _models_root(settings))


def _variants_file(run_dir: Path, default: str) -> Path:
    """The packaged variants with `default` as the gateway's default: what the demo shows, clients get."""
    from importlib import resources

    packaged = resources.files("gateway").joinpath("variants.yaml").read_text(encoding="utf-8")
    text, replaced = re.subn(r"(?m)^default: .*$", f"default: {default}", packaged, count=1)
    if replaced != 1:
        raise ServiceStartError("the packaged gateway/variants.yaml has no `default:` line")
    path = run_dir / "variants.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _start_reranker(
    stack: ServiceStack,
    settings: DemoSettings,
    artifact: Path | None,
    training: BackgroundTraining | None,
    resources: contextlib.ExitStack,
    token_root: Path,
) -> str:
    # Imported here: only the triton and redis options need them.
    from operations.redis_server import RedisServer
    from operations.triton_repository import assemble_model_repository
    from operations.tritonserver import TritonServer

    argv = [sys.executable, "-m", "reranker_service", "--cache", settings.cache]
    if settings.late_interaction or settings.rescoring:
        backend = "late-interaction" if settings.late_interaction else "bi-encoder"
        argv += ["--backend", backend, "--token-store", str(token_root)]
    else:
        argv += ["--backend", settings.reranker]
    if settings.reranker == "triton":
        assert artifact is not None  # main trains first for Triton
        repository = assemble_model_repository(
            stack.run_dir / "triton-models", artifact_root=artifact.parent, artifact_version=artifact.name
        )
        triton = resources.enter_context(TritonServer(repository, work_dir=stack.run_dir / "triton"))
        stack.supervise_external("triton", lambda: triton.crashed, triton.start)  # same ports on restart
        print(f"  triton   serving on {triton.grpc_url} (started in {triton.startup_seconds:.1f}s)")
        argv += ["--triton-url", triton.grpc_url]
    elif artifact is not None:
        argv += ["--artifact-dir", str(artifact)]
    else:
        assert training is not None
        argv += ["--artifact-dir", str(training.serving_root), "--wait-for-model"]
    if settings.cache == "redis":
        redis = resources.enter_context(RedisServer())
        stack.supervise_external("redis", lambda: redis.crashed, redis.start)
        print(f"  redis    serving on {redis.url}")
        argv += ["--redis-url", redis.url]
    reranker = stack.spawn("reranker", argv)
    reranker.wait_ready(settings.startup_timeout_seconds, serving=artifact is not None)
    state = "serving" if artifact is not None else "waiting for its model (being prepared, below)"
    print(f"  reranker {state} on {reranker.address} ({settings.reranker}, cache {settings.cache})")
    return reranker.address


def _start_stack(
    stack: ServiceStack,
    settings: DemoSettings,
    dense: Path,
    bm25: Path,
    reranker_address: str | None,
) -> str:
    python = sys.executable
    argv = [python, "-m", "gateway", *_retrievers_of(stack, settings, dense, bm25)]
    # The dense shards run the packaged encoder (no --encoder): the gateway embeds each query once with it.
    argv += ["--query-encoder", str(_query_encoder_dir())]
    if reranker_address is not None:
        argv += ["--reranker", reranker_address]
    argv += ["--variants", str(_variants_file(stack.run_dir, settings.variant))]
    gateway = stack.start("gateway", argv, timeout=settings.startup_timeout_seconds)
    print(f"  gateway  serving on {gateway.address}")
    return gateway.address


def _retrievers_of(stack: ServiceStack, settings: DemoSettings, dense: Path, bm25: Path) -> list[str]:
    """The gateway's flags for its retrievers: the indexes themselves (searched in the gateway's process),
    or the addresses of the retriever processes started here (one for every shard, or one per shard)."""
    if settings.retriever_processes == "none":
        return ["--index", str(dense), "--index", str(bm25)]
    retriever = [sys.executable, "-m", "retriever_service", "--threads", str(settings.retriever_threads)]
    if settings.retriever_processes == "one":  # every shard, dense and BM25, in one process
        spawned = [stack.spawn("retriever", [*retriever, "--index", str(dense), "--index", str(bm25)])]
    else:
        shards = [(f"dense-{i}", dense / f"shard-{i}") for i in range(settings.dense_shards)]
        shards.append(("bm25-0", bm25 / "shard-0"))
        spawned = [stack.spawn(name, [*retriever, "--index", str(path)]) for name, path in shards]
    for service in spawned:
        service.wait_ready(settings.startup_timeout_seconds)
        print(f"  {service.name:<8} serving on {service.address}")

    def serving(kind: str) -> str:
        return ",".join(s.address for s in spawned if s.name == "retriever" or s.name.startswith(kind))

    return ["--dense", serving("dense"), "--bm25", serving("bm25")]


def _serve_stack_metrics(stack: ServiceStack, port: int, resources: contextlib.ExitStack) -> None:
    """The supervisor's restart counts over HTTP for Prometheus, until the stack stops."""
    server, _ = start_http_server(port, addr="127.0.0.1", registry=stack.registry)
    resources.callback(server.shutdown)
    print(f"  metrics  http://127.0.0.1:{server.server_port}/metrics (search_stack_restarts_total)")


def _run_queries(address: str, settings: DemoSettings) -> None:
    with grpc.insecure_channel(address, options=message_size_options()) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        for query in settings.queries:
            print(f"\n=== {query}")
            # No variant: the gateway's default, which is the demo's (see _variants_file).
            request = search_service_pb2.SearchRequest(query=query, top_k=settings.top_k)
            try:
                response = stub.Search(request, timeout=settings.request_timeout_seconds)
            except grpc.RpcError as exc:
                print(f"error: {exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
                continue
            format_response(response, sys.stdout)


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass


def _client_command() -> str:
    """search-client as the user can type it: the full path when it is not on PATH (a virtualenv's bin)."""
    beside = Path(sys.executable).parent / "search-client"
    on_path = shutil.which("search-client")
    return "search-client" if on_path and Path(on_path) == beside else str(beside)


def _show_reranked_when_trained(
    training: BackgroundTraining, reranker_address: str, gateway_address: str, settings: DemoSettings
) -> None:
    print(
        f"\nthe {training.what} is still being prepared; the answers above are first-stage. Waiting to show "
        "them re-ranked (Ctrl-C stops)..."
    )
    training.wait()
    if training.artifact is None:
        return
    wait_for_serving(reranker_address, settings.startup_timeout_seconds, RERANKER_SERVICE)
    print("\nthe same queries, re-ranked:")
    _run_queries(gateway_address, settings)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_demo_settings(argv)
    configure_logging(settings.log_level)
    started = time.monotonic()
    which = f"{settings.corpus}" if settings.corpus is not None else "the stdlib corpus"
    print(f"preparing {which} and its indexes (cached under var/ after the first run)...")
    try:
        corpus = _corpus(settings)
        dense, bm25 = _build_artifacts(settings, corpus)
    except (CorpusError, BuildError) as exc:
        print(f"search-demo: {exc}", file=sys.stderr)
        return 2
    run_dir = settings.var_dir / "run" / f"demo-{int(time.time())}"
    artifact: Path | None = None
    training: BackgroundTraining | None = None
    if settings.reranker != "none":
        try:
            artifact = _ready_reranker_artifact(settings, corpus)
        except ArtifactError as exc:
            print(f"search-demo: {exc}", file=sys.stderr)
            return 2
        if artifact is None and settings.reranker == "triton":
            print("training the default cross-encoder first (Triton serves only models that exist)...")
            artifact = _train_now(settings, corpus)
        elif artifact is None:
            training = _background_training(settings, corpus, run_dir)
            training.start()
            doing = "storing its document vectors" if settings.rescoring else "training one"
            print(f"no cached {training.what}: {doing} in the background; first-stage answers meanwhile")
    print(f"ready in {time.monotonic() - started:.1f}s; starting the stack:")
    try:
        with contextlib.ExitStack() as resources, ServiceStack(run_dir) as stack:
            reranker_address = (
                _start_reranker(stack, settings, artifact, training, resources, _token_root(settings, corpus))
                if settings.reranker != "none"
                else None
            )
            address = _start_stack(stack, settings, dense, bm25, reranker_address)
            # From here on a service that dies comes back on its own port, Triton and Redis included.
            stack.supervise()
            if settings.metrics_port is not None:
                _serve_stack_metrics(stack, settings.metrics_port, resources)
            # Work that ended while the stack started (a small corpus) leaves nothing to show twice.
            pending = training is not None and not training.wait(0)
            if training is not None and not pending and training.artifact is not None:
                assert reranker_address is not None
                wait_for_serving(reranker_address, settings.startup_timeout_seconds, RERANKER_SERVICE)
            print(f"first answers {time.monotonic() - started:.1f}s after start")
            _run_queries(address, settings)
            if settings.keep_running:
                hint = f'{_client_command()} --target {address} "your query"'
                print(f"\nstack is up; try: {hint}   (Ctrl-C stops it)")
                _wait_for_interrupt()
            elif pending and training is not None and reranker_address is not None:
                _show_reranked_when_trained(training, reranker_address, address, settings)
            print("\nstopping the stack...")
    except (ServiceStartError, LocalServiceError) as exc:
        print(f"search-demo: a service failed to start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stack stopped", file=sys.stderr)
        return 130
    finally:
        if training is not None:
            training.close()
    print(f"logs: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
