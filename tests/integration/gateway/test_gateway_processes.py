"""The shipped entry points as separate processes.

Retriever and gateway start through operations.processes (port 0, port file, health), are queried with
search-client and stopped with SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest
from search.v1 import search_service_pb2, search_service_pb2_grpc

from operations.client_cli import main as client_main
from operations.processes import ServiceStack, ServiceStartError

pytestmark = pytest.mark.slow


def test_gateway_process_serves_client_and_stops_gracefully(
    indexes: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = indexes["bm25-1"] / "shard-0"
    with ServiceStack(tmp_path / "run") as stack:
        retriever = stack.start(
            "bm25-0", [sys.executable, "-m", "retriever_service", "--index", str(shard), "--threads", "1"]
        )
        gateway = stack.start("gateway", [sys.executable, "-m", "gateway", "--bm25", retriever.address])

        assert client_main(["--target", gateway.address, "gzip compress archive", "--top-k", "3"]) == 0
        out = capsys.readouterr().out
        assert "  1. " in out and "  3. " in out and "  4. " not in out
        assert "variant: bm25" in out  # hybrid is the default, but this gateway has no dense retriever
        assert "coverage: complete, shards answered 1/1" in out

        assert client_main(["--target", gateway.address, "gzip", "--top-k", "0"]) == 1
        assert "INVALID_ARGUMENT: top_k must be within [1, 100], got 0" in capsys.readouterr().err

        assert gateway.stop() == 0
        assert retriever.stop() == 0


def test_gateway_process_refuses_a_bad_variants_file(indexes: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "variants.yaml"
    bad.write_text("variants:\n  - {name: x, weight: 1, first_stage: sparse, retrieval_depth: 10}\n")
    with ServiceStack(tmp_path / "run") as stack:
        gateway = stack.spawn(
            "gateway", [sys.executable, "-m", "gateway", "--bm25", "127.0.0.1:9", "--variants", str(bad)]
        )
        with pytest.raises(ServiceStartError, match="exited with code 2") as info:
            gateway.wait_ready(60)
        assert "unknown first_stage 'sparse'" in str(info.value)


def test_one_retriever_process_serves_every_shard_to_the_gateway(
    indexes: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Three dense shards and a BM25 one in one process: the gateway asks it once per kind and still
    # counts, and names, every shard.
    argv = [sys.executable, "-m", "retriever_service", "--threads", "1"]
    argv += ["--index", str(indexes["dense-3"]), "--index", str(indexes["bm25-1"] / "shard-0")]
    with ServiceStack(tmp_path / "run") as stack:
        retriever = stack.start("retriever", argv)
        gateway = stack.start(
            "gateway",
            [sys.executable, "-m", "gateway", "--dense", retriever.address, "--bm25", retriever.address],
        )
        assert client_main(["--target", gateway.address, "gzip compress archive", "--variant", "hybrid"]) == 0
        out = capsys.readouterr().out
        assert "variant: hybrid" in out
        assert "coverage: complete, shards answered 4/4" in out
        for component in ("dense/shard-0", "dense/shard-1", "dense/shard-2", "bm25/shard-0"):
            assert component in out


def test_the_gateway_refuses_addresses_that_leave_a_shard_out(
    indexes: dict[str, Path], tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "retriever_service", "--threads", "1"]
    argv += ["--index", str(indexes["dense-3"] / "shard-0"), "--index", str(indexes["dense-3"] / "shard-2")]
    with ServiceStack(tmp_path / "run") as stack:
        retriever = stack.start("retriever", argv)
        gateway = stack.spawn("gateway", [sys.executable, "-m", "gateway", "--dense", retriever.address])
        with pytest.raises(ServiceStartError):
            gateway.wait_ready(60)
        assert "none serves [1]" in gateway.log_path.read_text()


def _ranking(address: str, query: str) -> list[tuple[str, float]]:
    with grpc.insecure_channel(address) as channel:
        response = search_service_pb2_grpc.SearchServiceStub(channel).Search(
            search_service_pb2.SearchRequest(query=query, top_k=10, variant="hybrid"), timeout=30
        )
    assert not response.metadata.coverage.degraded
    assert response.metadata.coverage.shards_answered == 4
    assert sorted(v.component for v in response.metadata.versions) == [
        "bm25/shard-0",
        "dense/shard-0",
        "dense/shard-1",
        "dense/shard-2",
    ]
    return [(hit.doc_id, round(hit.score, 6)) for hit in response.hits]


def test_a_gateway_searching_the_indexes_itself_ranks_as_one_over_a_retriever_process(
    indexes: dict[str, Path], tmp_path: Path
) -> None:
    # `--index` loads the shards into the gateway (no retriever process, no hop): the same shards, the
    # same query vector and the same fusion give the same ranking, with every shard still reported.
    paths = ["--index", str(indexes["dense-3"]), "--index", str(indexes["bm25-1"])]
    with ServiceStack(tmp_path / "run") as stack:
        retriever = stack.start("retriever", [sys.executable, "-m", "retriever_service", *paths])
        downstream = ["--dense", retriever.address, "--bm25", retriever.address]
        remote = stack.start(
            "gateway-remote",
            [sys.executable, "-m", "gateway", *downstream, "--query-encoder", "packaged"],
        )
        local = stack.start("gateway-local", [sys.executable, "-m", "gateway", *paths])
        for query in ("gzip compress archive", "parse command line arguments"):
            assert _ranking(local.address, query) == _ranking(remote.address, query)
        assert local.stop() == 0


def test_a_gateway_refuses_a_group_searched_in_process_and_remotely(
    indexes: dict[str, Path], tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "gateway", "--index", str(indexes["bm25-1"]), "--bm25", "127.0.0.1:9"]
    with ServiceStack(tmp_path / "run") as stack:
        gateway = stack.spawn("gateway", argv)
        with pytest.raises(ServiceStartError, match="exited with code 1"):
            gateway.wait_ready(60)
        assert "bm25: searched here (--index) and also given addresses" in gateway.log_path.read_text()
