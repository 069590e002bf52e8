"""The two entry points as a user runs them: `search-build-index` and `python -m retriever_service`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from search.v1 import retriever_pb2, retriever_pb2_grpc

from retriever_service.build_index import main as build_main
from retriever_service.server import SERVICE_NAME


def test_build_index_cli_builds_bm25(corpus_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "bm25" / "v1"
    assert (
        build_main(
            ["--corpus", str(corpus_path.parent), "--out", str(out), "--kind", "bm25", "--name", "tiny-bm25"]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["kind"], manifest["name"], manifest["num_documents"]) == ("bm25", "tiny-bm25", 36)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_build_index_cli_names_file_and_line_of_bad_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "title": "", "text": "fine"}\n{"_id": "b", "text": broken}\n')
    assert build_main(["--corpus", str(corpus), "--out", str(tmp_path / "out"), "--kind", "bm25"]) == 2
    err = capsys.readouterr().err
    assert f"{corpus}:2: not valid UTF-8 JSON" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kind", "bm25", "--shards", "2"], "BM25 indexes have exactly one shard"),
        (["--kind", "bm25", "--corpus-missing"], "file not found"),
    ],
)
def test_build_index_cli_bad_options_exit_2(
    argv: list[str], message: str, corpus_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "nope.jsonl" if "--corpus-missing" in argv else corpus_path
    argv = [a for a in argv if a != "--corpus-missing"]
    assert build_main(["--corpus", str(corpus), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _read_port(path: Path) -> int | None:
    return int(path.read_text()) if path.is_file() else None


async def _wait_for_port_file(path: Path, proc: asyncio.subprocess.Process) -> int:
    async with asyncio.timeout(120):
        while (port := _read_port(path)) is None:
            if proc.returncode is not None:
                raise AssertionError(f"server exited early with {proc.returncode}")
            await asyncio.sleep(0.1)
    return port


async def test_server_process_serves_and_stops_on_sigterm(bm25_index: Path, tmp_path: Path) -> None:
    port_file = tmp_path / "run" / "port"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "retriever_service",
        "--index",
        str(bm25_index / "shard-0"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--threads",
        "1",
        "--max-top-k",
        "10",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port = await _wait_for_port_file(port_file, proc)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            reply = await stub.Retrieve(
                retriever_pb2.RetrieveRequest(query="insomnia melatonin", top_k=3), timeout=10
            )
            assert reply.candidates[0].document.title.startswith("sleep")
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Retrieve(retriever_pb2.RetrieveRequest(query="sleep", top_k=11), timeout=10)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_server_refuses_a_corrupt_shard_with_exit_2(bm25_index: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(bm25_index, copy)
    (copy / "shard-0" / "docs.jsonl").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "retriever_service", "--index", str(copy / "shard-0"), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "checksum mismatch for docs.jsonl" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_server_with_bad_flag_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "retriever_service", "--index", "x", "--max-top-k", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--max-top-k must be positive" in proc.stderr
