"""The demo's default second stage end to end: `search-demo --corpus` on a small folder answers on the first
stage while the packaged all-mpnet-base-v2 stores the documents' vectors in the background, then shows the
same queries re-scored; a second run finds the store and serves it at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_runtimes.packaged_models import packaged_mpnet
from search_common.artifacts import read_manifest
from tests.demo_support import run_demo


@pytest.mark.slow
def test_search_demo_rescores_with_mpnet_once_its_vectors_are_stored(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    files = {
        "gzip.md": "# Compressed files\n\nUse gzip.open to read a file compressed with gzip.\n",
        "json.txt": "Parsing JSON. json.loads reads a JSON document from a string.\n",
        "hash.rst": "Hashing\n=======\n\nhashlib.sha256 computes the SHA-256 digest of bytes.\n",
    }
    for name, text in files.items():
        (docs / name).write_text(text)
    var = tmp_path / "var"
    argv = ("--var", var, "--corpus", docs, "--dense-shards", "1", "--query", "parse json from a string")

    first = run_demo(*argv)
    assert first.returncode == 0, first.stderr
    assert "storing its document vectors in the background" in first.stdout
    assert "reranker ready in" in first.stdout and "all-mpnet-base-v2 as packaged, untrained" in first.stdout
    # Shown first-stage (flagged DEGRADED) then again re-scored, or, on so small a corpus, stored before the
    # stack was up: the last answer is re-scored either way.
    last = first.stdout.split("\n=== ")[-1].split("\n")
    assert last[1].split()[2] == "json.txt" and "rerank=" in last[1]  # rank 1, re-scored
    assert ("coverage: DEGRADED" in first.stdout) == ("the same queries, re-ranked:" in first.stdout)
    version = read_manifest(packaged_mpnet())["version"]
    stores = list((var / "indexes").glob(f"user-*/bi-encoder/{version}/manifest.json"))
    assert len(stores) == 1 and read_manifest(stores[0].parent)["num_shards"] == 1

    second = run_demo(*argv)
    assert second.returncode == 0, second.stderr
    assert "reranker: all-mpnet-base-v2 as packaged" in second.stdout
    assert "in the background" not in second.stdout and "DEGRADED" not in second.stdout


def test_a_named_artifact_of_another_kind_is_refused_before_anything_starts(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Some text about sockets and servers.\n")
    (docs / "b.txt").write_text("Some text about files and folders.\n")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    manifest = {"name": "x", "version": "v1", "kind": "late-interaction", "weights_sha256": "0"}
    (wrong / "manifest.json").write_text(json.dumps({**manifest, "document_length": 8}))
    done = run_demo("--var", tmp_path / "var", "--corpus", docs, "--reranker-artifact", wrong)
    assert done.returncode == 2
    assert "a 'late-interaction' artifact, not a 'bi-encoder' one" in done.stderr
    assert not (tmp_path / "var" / "run").exists()
