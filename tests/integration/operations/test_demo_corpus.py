"""`search-demo --corpus` end to end on a small folder of your own files (real processes, first stage only so
that no model trains), and its bad inputs refused with a message and nothing built."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demo_support import run_demo

PARAGRAPH = "Sockets carry bytes between processes; a server listens, a client connects and sends data. "


@pytest.mark.slow
def test_search_demo_searches_a_folder_of_your_files(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "gzip.md").write_text(
        "# Compressed files\n\nUse gzip.open to read a file compressed with gzip.\n"
    )
    (docs / "sub" / "json.txt").write_text("Parsing JSON. json.loads reads a JSON document from a string.\n")
    (docs / "sockets.html").write_text(
        "<html><body>" + "<p>" + PARAGRAPH * 30 + "</p>" * 6 + "</body></html>"
    )
    var = tmp_path / "var"
    queries = ("--query", "parse json from a string", "--query", "how does a client connect to a server")
    done = run_demo("--var", var, "--corpus", docs, "--reranker", "none", "--dense-shards", "1", *queries)
    assert done.returncode == 0, done.stderr
    answers = done.stdout.split("=== ")
    json_answer = next(a for a in answers if a.startswith("parse json"))
    assert json_answer.split("\n")[1].split()[2] == "sub/json.txt"  # rank 1
    socket_answer = next(a for a in answers if a.startswith("how does a client"))
    assert "sockets.html#" in socket_answer  # a long file is searched by its passages, named after it
    assert len(list((var / "corpus").glob("user-*/corpus.jsonl"))) == 1


@pytest.mark.slow
def test_bad_folders_are_refused_with_a_message_and_nothing_is_built(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    var = tmp_path / "var"
    done = run_demo("--var", var, "--corpus", empty, "--reranker", "none")
    assert done.returncode == 2 and "no documents with text" in done.stderr
    (empty / "notes.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    done = run_demo("--var", var, "--corpus", empty, "--reranker", "none")
    assert done.returncode == 2 and "not UTF-8 text (notes.txt)" in done.stderr
    assert not list(var.glob("corpus/user-*")) and not (var / "indexes").exists()
    missing = run_demo("--var", var, "--corpus", tmp_path / "nowhere")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
