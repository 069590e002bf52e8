"""Gateway flags and deployment YAML: precedence, and a clear exit-2 message for every bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import parse_settings
from operations.demo_config import (
    COLBERT_VARIANT,
    CROSS_ENCODER_VARIANT,
    DEMO_RERANKED_VARIANT,
    parse_demo_settings,
)


def test_flags_give_groups_and_reranker() -> None:
    settings = parse_settings(
        ["--dense", "127.0.0.1:7001, 127.0.0.1:7002", "--bm25", "localhost:7003", "--reranker", "h:9"], {}
    )
    assert settings.retrievers == {"dense": ("127.0.0.1:7001", "127.0.0.1:7002"), "bm25": ("localhost:7003",)}
    assert settings.reranker == "h:9"
    assert (settings.max_top_k, settings.max_query_chars, settings.default_deadline_seconds) == (
        100,
        2048,
        2.0,
    )
    assert settings.variant_bounds.max_rerank_depth == 200


def test_yaml_config_with_flag_override(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("retrievers:\n  dense: [a:1, b:2]\n  bm25: c:3\nreranker: r:4\n")
    settings = parse_settings(["--config", str(config), "--bm25", "d:5"], {})
    assert settings.retrievers == {"dense": ("a:1", "b:2"), "bm25": ("d:5",)}
    assert settings.reranker == "r:4"


def test_environment_is_read_only_here() -> None:
    settings = parse_settings([], {"SEARCH_GATEWAY_DENSE": "e:1", "SEARCH_GATEWAY_PORT": "7000"})
    assert settings.retrievers == {"dense": ("e:1",)} and settings.port == 7000


def test_fusion_models_come_from_repeated_flags_or_the_environment() -> None:
    flagged = parse_settings(["--dense", "a:1", "--fusion-model", "m/one", "--fusion-model", "m/two"], {})
    assert flagged.fusion_models == (Path("m/one"), Path("m/two"))
    from_env = parse_settings(
        [], {"SEARCH_GATEWAY_DENSE": "a:1", "SEARCH_GATEWAY_FUSION_MODELS": "m/one,m/two"}
    )
    assert from_env.fusion_models == (Path("m/one"), Path("m/two"))


@pytest.mark.parametrize(
    ("argv", "yaml_text", "message"),
    [
        ([], None, "no retrievers configured"),
        (["--dense", "nohost"], None, "--dense: 'nohost' is not a host:port address"),
        (["--dense", "a:1", "--reranker", "r:x"], None, "--reranker: 'r:x' is not a host:port"),
        (["--dense", "a:1", "--reranker-route", "colbert"], None, "expected MODEL=HOST:PORT"),
        (["--dense", "a:1", "--reranker-route", "colbert=r:x"], None, "'r:x' is not a host:port"),
        (["--dense", "a:1", "--reranker-route", "m@v1=r:1"], None, "is not a reranker model name"),
        (["--dense", "a:1", "--reranker-route", "m=r:1", "--reranker-route", "m=r:2"], None, "routed twice"),
        (["--dense", "a:1", "--max-top-k", "0"], None, "--max-top-k must be positive"),
        (["--dense", "a:1", "--rerank-share", "1.5"], None, "--rerank-share must be within"),
        (["--dense", "a:1", "--default-deadline", "0"], None, "--default-deadline must be positive"),
        ([], "retrievers: {sparse: [a:1]}\n", "unknown retriever group 'sparse'"),
        ([], "retrievers: [a:1]\n", "'retrievers' must map a group"),
        ([], "retrievers: {dense: [a:1]}\nextra: 1\n", r"unknown field\(s\) extra"),
        ([], "retrievers: {dense: [a:1]}\nreranker_routes: [a:1]\n", "'reranker_routes' must map"),
        ([], "retrievers: {dense: [a:1\n", "not valid YAML"),
        # An argument's {tmp} is the test's temporary directory.
        (["--index", "{tmp}/none"], None, "--index .*/none: no such directory"),
        (["--index", "{tmp}", "--index", "{tmp}"], None, "--index names the same directory twice"),
        ([], "indexes: {dense: x}\n", "'indexes' must be a list of index directories"),
        ([], "{}\n", "--index directories"),  # nothing to search at all
    ],
)
def test_bad_settings_exit_2_with_a_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    yaml_text: str | None,
    message: str,
) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv]
    if yaml_text is not None:
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml_text)
        argv = [*argv, "--config", str(config)]
    with pytest.raises(SystemExit) as info:
        parse_settings(argv, {})
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--config", str(tmp_path / "none.yaml")], {})
    assert "cannot read" in capsys.readouterr().err


def test_demo_reranks_by_default_and_picks_a_matching_variant() -> None:
    default = parse_demo_settings([])
    assert default.queries[0] == "how do I parse command line arguments"
    assert (default.reranker, default.cache, default.variant) == ("mpnet", "lru", DEMO_RERANKED_VARIANT)
    assert default.rescoring and not default.late_interaction
    colbert = parse_demo_settings(["--reranker", "colbert"])
    assert (colbert.variant, colbert.late_interaction, colbert.rescoring) == (COLBERT_VARIANT, True, False)
    torch = parse_demo_settings(["--reranker", "torch"])
    assert (torch.reranker, torch.variant, torch.late_interaction) == ("torch", CROSS_ENCODER_VARIANT, False)
    assert parse_demo_settings(["--reranker", "none"]).variant == "hybrid"
    assert parse_demo_settings(["--reranker", "none", "--variant", "dense"]).variant == "dense"
    triton = parse_demo_settings(["--reranker", "triton", "--cache", "redis"])
    assert (triton.reranker, triton.cache) == ("triton", "redis")


def test_demo_refuses_an_unknown_reranker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_demo_settings(["--reranker", "openvino"])
    assert "invalid choice: 'openvino'" in capsys.readouterr().err


def test_per_stage_timeouts_parse_and_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    settings = parse_settings(["--bm25", "b:1", "--retrieve-timeout", "0.3", "--rerank-timeout", "0.5"], {})
    assert (settings.retrieve_timeout_seconds, settings.rerank_timeout_seconds) == (0.3, 0.5)
    assert parse_settings(["--bm25", "b:1"], {}).rerank_timeout_seconds is None
    with pytest.raises(SystemExit):
        parse_settings(["--bm25", "b:1", "--rerank-timeout", "0"], {})
    assert "--rerank-timeout must be positive" in capsys.readouterr().err


def test_query_encoder_from_flag_or_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_settings(["--dense", "a:1"], {}).query_encoder is None
    assert parse_settings(["--dense", "a:1", "--query-encoder", "packaged"], {}).query_encoder == "packaged"
    settings = parse_settings(
        ["--dense", "a:1"],
        {"SEARCH_GATEWAY_QUERY_ENCODER": "/models/enc", "SEARCH_GATEWAY_QUERY_ENCODER_THREADS": "2"},
    )
    assert (settings.query_encoder, settings.query_encoder_threads) == (Path("/models/enc"), 2)
    assert settings.query_encoder_engine == "auto"
    flagged = parse_settings(["--dense", "a:1", "--query-encoder-engine", "torch"], {})
    assert flagged.query_encoder_engine == "torch"
    from_env = parse_settings(["--dense", "a:1"], {"SEARCH_GATEWAY_QUERY_ENCODER_ENGINE": "onnx"})
    assert from_env.query_encoder_engine == "onnx"
    with pytest.raises(SystemExit) as exited:
        parse_settings(["--dense", "a:1", "--query-encoder-engine", "tensorrt"], {})
    assert exited.value.code == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        parse_settings(["--dense", "a:1", "--query-encoder-threads", "-1"], {})
    assert exited.value.code == 2
    assert "--query-encoder-threads must be >= 0" in capsys.readouterr().err


def test_reranker_routes_come_from_flags_or_the_environment() -> None:
    flagged = parse_settings(
        ["--dense", "a:1", "--reranker", "r:1", "--reranker-route", "colbert-minilm=c:2"],
        {"SEARCH_GATEWAY_RERANKER_ROUTES": "ignored=x:3"},
    )
    assert (flagged.reranker, dict(flagged.reranker_routes)) == ("r:1", {"colbert-minilm": "c:2"})
    from_env = parse_settings(["--dense", "a:1"], {"SEARCH_GATEWAY_RERANKER_ROUTES": "a=x:3, b=y:4"})
    assert dict(from_env.reranker_routes) == {"a": "x:3", "b": "y:4"}


def test_reranker_routes_from_the_config_file_give_way_to_flags(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("retrievers: {dense: [a:1]}\nreranker_routes: {colbert-minilm: c:2}\n")
    assert dict(parse_settings(["--config", str(config)], {}).reranker_routes) == {"colbert-minilm": "c:2"}
    flagged = parse_settings(["--config", str(config), "--reranker-route", "other=d:3"], {})
    assert dict(flagged.reranker_routes) == {"other": "d:3"}


def test_demo_metrics_port_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_demo_settings(["--metrics-port", "0"]).metrics_port == 0
    assert parse_demo_settings([]).metrics_port is None
    with pytest.raises(SystemExit):
        parse_demo_settings(["--metrics-port", "70000"])
    assert "--metrics-port must be within 0..65535" in capsys.readouterr().err


def test_indexes_searched_in_process_come_from_flags_the_file_or_the_environment(tmp_path: Path) -> None:
    dense, bm25 = tmp_path / "dense", tmp_path / "bm25"
    dense.mkdir()
    bm25.mkdir()
    # Alone, they are enough: no retriever address is needed.
    assert parse_settings(["--index", str(dense), "--index", str(bm25)], {}).indexes == (dense, bm25)
    assert parse_settings([], {"SEARCH_GATEWAY_INDEXES": f"{dense},{bm25}"}).indexes == (dense, bm25)
    # The file names them relative to itself; a flag replaces its list; remote groups may sit beside them.
    config = tmp_path / "gateway.yaml"
    config.write_text("indexes: [dense]\nretrievers: {bm25: [c:3]}\n")
    from_file = parse_settings(["--config", str(config)], {})
    assert (from_file.indexes, from_file.retrievers) == ((dense,), {"bm25": ("c:3",)})
    assert parse_settings(["--config", str(config), "--index", str(bm25)], {}).indexes == (bm25,)


def test_a_local_reranker_takes_the_reranker_services_flags(capsys: pytest.CaptureFixture[str]) -> None:
    settings = parse_settings(
        ["--dense", "a:1", "--local-reranker", "--backend onnx --artifact-dir 'm/ce v1'"], {}
    )
    assert settings.local_reranker is not None
    assert (settings.local_reranker.backend, settings.local_reranker.artifact_dir) == (
        "onnx",
        Path("m/ce v1"),
    )
    for flags, message in (
        (["--reranker", "r:1", "--local-reranker", "--backend triton"], "--reranker .* or --local-reranker"),
        (["--local-reranker", "--backend onnx --artifact-dir 'm"], "No closing quotation"),
        (["--local-reranker", "--backend triton --wait-for-model"], "--wait-for-model"),
        (
            ["--local-reranker", "--backend sparse"],
            "search-gateway --local-reranker: error: argument --backend",
        ),
    ):
        with pytest.raises(SystemExit) as info:
            parse_settings(["--dense", "a:1", *flags], {})
        assert info.value.code == 2
        assert re.search(message, capsys.readouterr().err)
