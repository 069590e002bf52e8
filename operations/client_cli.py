"""`search-client`: query a running gateway and print ranked hits, per-stage timings and coverage.

    search-client --target 127.0.0.1:50051 "read a gzip compressed file" --top-k 5 --variant bm25

Exit codes: 0 on an answer, 1 when the gateway returns an error status (printed with its code), 2 for bad
command-line input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

import grpc
from search.v1 import search_service_pb2, search_service_pb2_grpc

from search_common.grpc_server import message_size_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search-client", description="Query a search.v1 gateway.")
    parser.add_argument("query", help="the search query")
    parser.add_argument("--target", required=True, help="gateway host:port")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--variant", default="", help="variant to serve (default: the gateway assigns one)")
    parser.add_argument("--caller-key", default="", help="sticky A/B assignment key")
    parser.add_argument("--retrieval-depth", type=int, default=None, help="override the variant's depth")
    parser.add_argument("--rerank-depth", type=int, default=None, help="override; 0 disables reranking")
    parser.add_argument("--timeout", type=float, default=5.0, help="request deadline in seconds")
    return parser


def _seconds(timing: object) -> float:
    duration = timing.duration  # type: ignore[attr-defined]
    return float(duration.seconds + duration.nanos / 1e9)


def format_response(response: search_service_pb2.SearchResponse, out: TextIO) -> None:
    """Prints hits, then variant, versions, timings and coverage, in a fixed human-readable layout."""
    for hit in response.hits:
        rerank = f" rerank={hit.rerank_score:.4f}" if hit.HasField("rerank_score") else ""
        title = f"  {hit.title}" if hit.title and hit.title != hit.doc_id else ""
        print(
            f"{hit.rank:>3}. {hit.score:9.4f}  {hit.doc_id}{title}"
            f"  (retrieval={hit.retrieval_score:.4f}{rerank})",
            file=out,
        )
        if hit.snippet:
            print(f"       {hit.snippet}", file=out)
    meta = response.metadata
    print(f"variant: {meta.variant}", file=out)
    for version in meta.versions:
        print(f"  version {version.component}: {version.name} {version.version}", file=out)
    print("timings:", file=out)
    for timing in meta.timings:
        where = f" [{timing.component}]" if timing.component else ""
        print(f"  {timing.stage:<10}{where:<20} {_seconds(timing) * 1000:8.1f} ms", file=out)
    coverage = meta.coverage
    state = "DEGRADED" if coverage.degraded else "complete"
    print(
        f"coverage: {state}, shards answered {coverage.shards_answered}/{coverage.shards_queried}", file=out
    )
    for degradation in coverage.degradations:
        stage = search_service_pb2.Stage.Name(degradation.stage)
        reason = search_service_pb2.DegradationReason.Name(degradation.reason)
        print(f"  {stage} {degradation.component}: {reason} ({degradation.detail})", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    overrides = search_service_pb2.SearchOverrides()
    if args.retrieval_depth is not None:
        overrides.retrieval_depth = args.retrieval_depth
    if args.rerank_depth is not None:
        overrides.rerank_depth = args.rerank_depth
    request = search_service_pb2.SearchRequest(
        query=args.query,
        top_k=args.top_k,
        variant=args.variant,
        caller_key=args.caller_key,
        overrides=overrides,
    )
    with grpc.insecure_channel(args.target, options=message_size_options()) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        try:
            response = stub.Search(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            print(f"error: {code.name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
    format_response(response, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
