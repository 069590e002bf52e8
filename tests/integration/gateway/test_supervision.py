"""The local stack's supervisor: a service killed with SIGKILL comes back by itself on its old port, the
gateway (never told) recovers, every restart is counted, and stopping the stack stops the restarted ones.

Real processes: a BM25 shard and a gateway over it, started through operations.processes as search-demo
starts them."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import grpc
import pytest
from search.v1 import search_service_pb2, search_service_pb2_grpc

from operations.processes import RestartPolicy, ServiceProcess, ServiceStack

VARIANTS = "variants:\n  - {name: bm25, weight: 1, first_stage: bm25, retrieval_depth: 10}\n"


def _answer(address: str) -> search_service_pb2.SearchResponse | None:
    """One search through the gateway; None while it cannot answer."""
    with grpc.insecure_channel(address) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        try:
            reply: search_service_pb2.SearchResponse = stub.Search(
                search_service_pb2.SearchRequest(query="network socket", top_k=3), timeout=5
            )
        except grpc.RpcError:
            return None
    return reply


def _until_complete(address: str, within: float = 60.0) -> search_service_pb2.SearchResponse:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        reply = _answer(address)
        if reply is not None and not reply.metadata.coverage.degraded:
            return reply
        time.sleep(0.2)
    raise AssertionError(f"no complete answer from {address} within {within:.0f}s")


def _restarts(stack: ServiceStack, component: str) -> float:
    value = stack.registry.get_sample_value("search_stack_restarts_total", {"component": component})
    return value or 0.0


def test_killed_services_come_back_on_their_ports_and_stop_with_the_stack(
    indexes: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="operations.processes")
    variants = tmp_path / "variants.yaml"
    variants.write_text(VARIANTS)
    python = sys.executable
    finished: list[ServiceProcess] = []
    with ServiceStack(tmp_path / "run") as stack:
        shard = stack.start(
            "bm25-0", [python, "-m", "retriever_service", "--index", str(indexes["bm25-1"] / "shard-0")]
        )
        gateway = stack.start(
            "gateway", [python, "-m", "gateway", "--bm25", shard.address, "--variants", str(variants)]
        )
        stack.supervise(RestartPolicy(first_delay=0.2, max_delay=1.0))
        assert len(_until_complete(gateway.address).hits) == 3

        shard.kill()  # a crash: no drain, nothing told
        reply = _until_complete(gateway.address)
        assert len(reply.hits) == 3
        back = stack.service("bm25-0")
        assert back is not shard and back.running and back.address == shard.address
        assert _restarts(stack, "bm25-0") == 1.0

        gateway.kill()
        assert len(_until_complete(gateway.address).hits) == 3  # the same address answers again
        assert _restarts(stack, "gateway") == 1.0 and _restarts(stack, "bm25-0") == 1.0
        assert f"bm25-0 restarted on {shard.address} (restart 1)" in caplog.text
        assert f"gateway restarted on {gateway.address} (restart 1)" in caplog.text
        finished = [stack.service("bm25-0"), stack.service("gateway")]
    assert all(not service.running for service in finished)
    assert _answer(gateway.address) is None
