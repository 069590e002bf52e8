"""`search-demo`: the embedded default, in one command, on this machine.

Builds (once, cached under var/) the stdlib documentation corpus, a 2-shard dense index and a BM25 index;
starts every retriever shard as its own process and then the gateway, all on free loopback ports; waits for
health SERVING; runs example queries through the gateway over gRPC and prints ranked results with per-stage
timings; then stops every process (SIGTERM, then SIGKILL after a grace period), also on Ctrl-C or failure.

    search-demo                      # build if needed, start, query, stop
    search-demo --keep-running       # leave the stack up for `search-client --target ...`
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from search.v1 import search_service_pb2, search_service_pb2_grpc

from gateway.client_cli import format_response
from gateway.config import DemoSettings, parse_demo_settings
from gateway.evaluate import ensure_index
from search_common.grpc_server import message_size_options
from search_common.logging_setup import configure_logging
from search_common.processes import ServiceStack, ServiceStartError
from search_common.stdlib_corpus import ensure_stdlib_corpus

logger = logging.getLogger(__name__)


def _build_artifacts(settings: DemoSettings) -> tuple[Path, Path]:
    from retriever_service.encoder import BiEncoder

    corpus = ensure_stdlib_corpus(settings.var_dir / "corpus" / "stdlib")
    index_root = settings.var_dir / "indexes"
    encoder = BiEncoder.load()
    dense = ensure_index(
        corpus,
        index_root,
        kind="dense",
        num_shards=settings.dense_shards,
        encoder=encoder,
        dataset_name="stdlib",
    )
    bm25 = ensure_index(corpus, index_root, kind="bm25", dataset_name="stdlib")
    return dense, bm25


def _start_stack(stack: ServiceStack, settings: DemoSettings, dense: Path, bm25: Path) -> str:
    python = sys.executable
    threads = ["--threads", str(settings.retriever_threads)]
    shards = [(f"dense-{i}", dense / f"shard-{i}") for i in range(settings.dense_shards)]
    shards.append(("bm25-0", bm25 / "shard-0"))
    started = [
        stack.spawn(name, [python, "-m", "retriever_service", "--index", str(path), *threads])
        for name, path in shards
    ]
    for service in started:
        service.wait_ready(settings.startup_timeout_seconds)
        print(f"  {service.name:<8} serving on {service.address}")
    dense_addresses = ",".join(s.address for s in started if s.name.startswith("dense"))
    bm25_addresses = ",".join(s.address for s in started if s.name.startswith("bm25"))
    gateway = stack.start(
        "gateway",
        [python, "-m", "gateway", "--dense", dense_addresses, "--bm25", bm25_addresses],
        timeout=settings.startup_timeout_seconds,
    )
    print(f"  gateway  serving on {gateway.address}")
    return gateway.address


def _run_queries(address: str, settings: DemoSettings) -> None:
    with grpc.insecure_channel(address, options=message_size_options()) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        for query in settings.queries:
            print(f"\n=== {query}")
            request = search_service_pb2.SearchRequest(
                query=query, top_k=settings.top_k, variant=settings.variant
            )
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


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_demo_settings(argv)
    configure_logging(settings.log_level)
    started = time.monotonic()
    print("preparing the stdlib corpus and indexes (cached under var/ after the first run)...")
    dense, bm25 = _build_artifacts(settings)
    print(f"ready in {time.monotonic() - started:.1f}s; starting the stack:")
    run_dir = settings.var_dir / "run" / f"demo-{int(time.time())}"
    try:
        with ServiceStack(run_dir) as stack:
            address = _start_stack(stack, settings, dense, bm25)
            _run_queries(address, settings)
            if settings.keep_running:
                print(
                    f'\nstack is up; try: search-client --target {address} "your query"   (Ctrl-C stops it)'
                )
                _wait_for_interrupt()
            print("\nstopping the stack...")
    except ServiceStartError as exc:
        print(f"search-demo: a service failed to start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stack stopped", file=sys.stderr)
        return 130
    print(f"logs: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
