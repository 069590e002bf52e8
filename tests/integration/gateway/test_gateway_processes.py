"""The shipped entry points as separate processes.

Retriever and gateway start through operations.processes (port 0, port file, health), are queried with
search-client and stopped with SIGTERM.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import grpc
import pytest
from search.v1 import search_service_pb2, search_service_pb2_grpc

from operations.client_cli import main as client_main
from operations.processes import ServiceStack, ServiceStartError
from tests.cross_encoder_support import cross_encoder_artifact

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


def _search(address: str, query: str, variant: str = "") -> search_service_pb2.SearchResponse:
    with grpc.insecure_channel(address) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        request = search_service_pb2.SearchRequest(query=query, top_k=10, variant=variant)
        response: search_service_pb2.SearchResponse = stub.Search(request, timeout=30)
    return response


def _ranking(address: str, query: str) -> list[tuple[str, float]]:
    response = _search(address, query, "hybrid")
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


RERANKED_VARIANTS = """
default: ce
variants:
  - {name: ce, weight: 1, first_stage: hybrid, retrieval_depth: 20, reranker: cross-encoder-minilm,
     rerank_depth: 10}
"""


def test_a_gateway_running_every_stage_itself_reranks_as_one_over_services(
    indexes: dict[str, Path], tmp_path: Path
) -> None:
    # `--index` and `--local-reranker` leave one process on a small host: the reranker service's own core
    # (scorer, cache, limits) runs in the gateway, and the answer is the one the services give.
    variants = tmp_path / "variants.yaml"
    variants.write_text(RERANKED_VARIANTS)
    paths = ["--index", str(indexes["dense-3"]), "--index", str(indexes["bm25-1"])]
    reranker_flags = ["--backend", "onnx", "--artifact-dir", str(cross_encoder_artifact()), "--cache", "lru"]
    gateway = [sys.executable, "-m", "gateway", "--variants", str(variants)]
    with ServiceStack(tmp_path / "run") as stack:
        retriever = stack.start("retriever", [sys.executable, "-m", "retriever_service", *paths])
        reranker = stack.start("reranker", [sys.executable, "-m", "reranker_service", *reranker_flags])
        services = ["--dense", retriever.address, "--bm25", retriever.address, "--reranker", reranker.address]
        remote = stack.start("gateway-remote", [*gateway, *services, "--query-encoder", "packaged"])
        local = stack.start(
            "gateway-local", [*gateway, *paths, "--local-reranker", shlex.join(reranker_flags)]
        )
        for query in ("gzip compress archive", "parse command line arguments"):
            answers = [_search(g.address, query) for g in (local, remote)]
            for answer in answers:
                assert answer.metadata.variant == "ce"
                assert not answer.metadata.coverage.degraded
                assert {v.component for v in answer.metadata.versions} >= {"reranker", "bm25/shard-0"}
                assert all(hit.HasField("rerank_score") for hit in answer.hits)
            local_hits, remote_hits = ([(h.doc_id, round(h.score, 5)) for h in a.hits] for a in answers)
            assert local_hits == remote_hits
        assert local.stop() == 0


def test_a_gateway_refuses_bad_local_reranker_flags(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "gateway", "--index", str(tmp_path)]
    with ServiceStack(tmp_path / "run") as stack:
        gateway = stack.spawn("gateway", [*argv, "--local-reranker", "--backend onnx"])
        with pytest.raises(ServiceStartError, match="exited with code 2"):
            gateway.wait_ready(60)
        log = gateway.log_path.read_text()
        assert "search-gateway --local-reranker: error" in log
        assert "needs --artifact-dir" in log
