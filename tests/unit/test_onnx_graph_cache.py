"""The on-disk cache of exported ONNX graphs: made once, read back whole, and never in the way."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from model_runtimes.onnx_graph_cache import cached_graph, drop_cached_graph, graph_key


def test_a_graph_is_made_once_and_then_read_back(tmp_path: Path) -> None:
    made: list[int] = []

    def make() -> bytes:
        made.append(1)
        return b"graph-bytes"

    assert cached_graph("k", make, cache=tmp_path) == b"graph-bytes"
    assert cached_graph("k", make, cache=tmp_path) == b"graph-bytes"
    assert len(made) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["k.onnx"]  # no scratch file left beside it


def test_a_dropped_graph_is_made_again(tmp_path: Path) -> None:
    cached_graph("k", lambda: b"old", cache=tmp_path)
    drop_cached_graph("k", cache=tmp_path)
    drop_cached_graph("k", cache=tmp_path)  # dropping what is not there is not an error
    assert cached_graph("k", lambda: b"new", cache=tmp_path) == b"new"


def test_a_cache_that_cannot_be_written_costs_only_the_export(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        assert cached_graph("k", lambda: b"graph", cache=blocker / "onnx") == b"graph"
    assert "the next start exports it again" in caplog.text


def test_keys_change_with_every_input_and_stay_file_names() -> None:
    parts = {"name": "all-mpnet-base-v2@eb8d/../x", "weights_sha256": "ab", "scheme": "fp32", "torch": "2.9"}
    key = graph_key(parts)
    assert "/" not in key and key.startswith("all-mpnet-base-v2")
    assert graph_key(parts) == key
    for field in parts:
        assert graph_key({**parts, field: parts[field] + "1"}) != key
