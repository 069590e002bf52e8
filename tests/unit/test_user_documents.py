"""Your own documents as a corpus: what is read, how it is cut into passages, and every bad input refused
before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpora import user_documents
from corpora.user_documents import (
    CorpusError,
    build_user_corpus,
    document_of,
    passages,
    read_user_documents,
)
from search_common.documents import Document


def _folder(root: Path) -> Path:
    (root / "notes").mkdir(parents=True)
    (root / "gzip.md").write_text("# Reading compressed files\n\nUse gzip.open to read a compressed file.\n")
    (root / "notes" / "json.rst").write_text("Parsing JSON\n============\n\njson.loads parses a string.\n")
    (root / "page.html").write_text(
        "<html><head><title>Sockets</title><script>var x = 1</script></head>"
        "<body><p>Open a connection.</p><p>Send bytes.</p></body></html>"
    )
    (root / "plain.txt").write_text("No heading here, just text about sockets and files.\n")
    (root / "image.png").write_bytes(b"\x89PNG\x00\x01")
    (root / "empty.txt").write_text("   \n")
    return root


def test_a_folder_gives_one_document_per_text_file_titled_by_its_heading(tmp_path: Path) -> None:
    documents = {d.doc_id: d for d in read_user_documents(_folder(tmp_path / "docs"))}
    assert sorted(documents) == ["gzip.md", "notes/json.rst", "page.html", "plain.txt"]
    assert documents["gzip.md"].title == "Reading compressed files"
    assert documents["notes/json.rst"].title == "Parsing JSON"
    assert documents["page.html"].title == "Sockets"
    assert "var x" not in documents["page.html"].text and "Send bytes." in documents["page.html"].text
    assert documents["plain.txt"].title == "plain"


def test_long_documents_are_cut_into_passages_that_map_back() -> None:
    long_text = "\n\n".join(" ".join(f"w{p}x{i}" for i in range(120)) for p in range(5))
    parts = passages([Document("guide.md", "Guide", long_text), Document("short.md", "Short", "one line")])
    ids = [p.doc_id for p in parts]
    assert ids[-1] == "short.md" and all(i.startswith("guide.md#") for i in ids[:-1]) and len(ids) > 3
    assert all(len(p.text.split()) <= user_documents.PASSAGE_WORDS for p in parts)
    assert " ".join(p.text for p in parts[:-1]).split() == long_text.split()  # nothing lost or repeated
    assert {document_of(i) for i in ids} == {"guide.md", "short.md"}
    assert document_of("v2.0#notes") == "v2.0#notes"  # only a numeric suffix marks a passage


def test_the_corpus_is_cached_by_content(tmp_path: Path) -> None:
    docs = _folder(tmp_path / "docs")
    first = build_user_corpus(docs, tmp_path / "corpora")
    assert build_user_corpus(docs, tmp_path / "corpora") == first
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert {r["_id"] for r in rows} == {"gzip.md", "notes/json.rst", "page.html", "plain.txt"}
    (docs / "plain.txt").write_text("Changed text about sockets.\n")
    assert build_user_corpus(docs, tmp_path / "corpora") != first


def test_jsonl_and_beir_folders_are_read_as_they_are(tmp_path: Path) -> None:
    corpus = tmp_path / "beir" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text(
        '{"_id": "d1", "title": "T", "text": "some text"}\n{"_id": "d2", "title": "", "text": "more"}\n'
    )
    assert [d.doc_id for d in read_user_documents(corpus)] == ["d1", "d2"]
    assert [d.doc_id for d in read_user_documents(corpus.parent)] == ["d1", "d2"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no documents with text"),
        (lambda root: (root / "a.txt").write_bytes("caf\xe9".encode("latin-1")), "not UTF-8 text .*a.txt"),
        (lambda root: (root / "b.md").write_bytes(b"text\x00with a null"), "not UTF-8 text .*b.md"),
        (lambda root: (root / "c.txt").write_text("   "), "no documents with text"),
        (lambda root: (root / "big.txt").write_text("x" * 2048), "big.txt is .* MiB; files up to"),
        (
            lambda root: (root / "corpus.jsonl").write_text(
                '{"_id": "d", "text": "a"}\n{"_id": "d", "text": "b"}\n'
            ),
            r"corpus.jsonl:2: duplicate '_id' 'd'",
        ),
        (
            lambda root: (root / "corpus.jsonl").write_text('{"_id": "d#1", "text": "a"}\n'),
            "holds '#', which marks passages",
        ),
        (lambda root: (root / "corpus.jsonl").write_text("{not json\n"), "corpus.jsonl:1"),
    ],
)
def test_bad_input_is_refused_with_a_message_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: object, message: str
) -> None:
    monkeypatch.setattr(user_documents, "MAX_FILE_BYTES", 1024)
    root = tmp_path / "docs"
    root.mkdir()
    make(root)  # type: ignore[operator]
    with pytest.raises(CorpusError, match=message):
        build_user_corpus(root, tmp_path / "corpora")
    assert not (tmp_path / "corpora").exists()


def test_a_path_that_is_neither_folder_nor_jsonl_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(CorpusError, match=r"not a folder of documents, a \.jsonl file or a BEIR folder"):
        read_user_documents(tmp_path / "notes.pdf")
