"""Reloading the variants file in a running gateway process: SIGHUP swaps the table, a bad file is rejected
and the old table kept, and requests in flight meanwhile all succeed."""

from __future__ import annotations

import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from search.v1 import search_service_pb2, search_service_pb2_grpc

from operations.launch import free_port
from operations.processes import ServiceStack

pytestmark = pytest.mark.slow

V1 = """
default: a
variants:
  - {name: a, weight: 1, first_stage: bm25, retrieval_depth: 20}
"""
V2 = """
default: b
variants:
  - {name: a, weight: 1, first_stage: bm25, retrieval_depth: 20}
  - {name: b, weight: 0, first_stage: bm25, retrieval_depth: 10}
"""
BAD = """
default: b
variants:
  - {name: b, weight: 1, first_stage: sparse, retrieval_depth: 10}
"""


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _default_variant(stub: search_service_pb2_grpc.SearchServiceStub) -> str:
    response = stub.Search(search_service_pb2.SearchRequest(query="gzip", top_k=3), timeout=10)
    return str(response.metadata.variant)


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_sighup_reloads_variants_without_failing_a_request(indexes: dict[str, Path], tmp_path: Path) -> None:
    variants = tmp_path / "variants.yaml"
    variants.write_text(V1)
    metrics_port = free_port()
    shard = indexes["bm25-1"] / "shard-0"
    with ServiceStack(tmp_path / "run") as stack:
        retriever = stack.start(
            "bm25-0", [sys.executable, "-m", "retriever_service", "--index", str(shard), "--threads", "1"]
        )
        gateway = stack.start(
            "gateway",
            [
                sys.executable, "-m", "gateway", "--bm25", retriever.address, "--variants", str(variants),
                "--variants-poll", "3600", "--metrics-port", str(metrics_port),
            ],
        )  # fmt: skip
        failures: list[str] = []
        answered: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with grpc.insecure_channel(gateway.address) as channel:
                stub = search_service_pb2_grpc.SearchServiceStub(channel)
                while not stop.is_set():
                    try:
                        answered.append(_default_variant(stub))
                    except grpc.RpcError as exc:
                        failures.append(f"{exc.code()}: {exc.details()}")

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            with grpc.insecure_channel(gateway.address) as channel:
                stub = search_service_pb2_grpc.SearchServiceStub(channel)
                assert _default_variant(stub) == "a"
                with pytest.raises(grpc.RpcError) as unknown:
                    stub.Search(
                        search_service_pb2.SearchRequest(query="gzip", top_k=3, variant="b"), timeout=10
                    )
                assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT

                variants.write_text(V2)
                time.sleep(0.3)
                assert _default_variant(stub) == "a"  # no poll for an hour: only SIGHUP reloads
                gateway.process.send_signal(signal.SIGHUP)
                _wait_for(lambda: _default_variant(stub) == "b")
                named = stub.Search(
                    search_service_pb2.SearchRequest(query="gzip", top_k=3, variant="b"), timeout=10
                )
                assert named.metadata.variant == "b"

                variants.write_text(BAD)
                gateway.process.send_signal(signal.SIGHUP)
                _wait_for(
                    lambda: _metric(metrics_port, 'search_gateway_variant_reloads_total{result="error"}') == 1
                )
                assert _default_variant(stub) == "b"  # the rejected file left the previous table in service
                assert _metric(metrics_port, 'search_gateway_variant_reloads_total{result="ok"}') == 1
                assert _metric(metrics_port, 'search_gateway_variant_weight{variant="a"}') == 1.0
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert failures == []
        assert {"a", "b"} <= set(answered)
        assert "variants reload rejected" in gateway.log_tail(200)
        assert gateway.stop() == 0
