"""Your own documents as a corpus: a folder of text files, a JSONL file, or a BEIR folder, cut into passages.

A folder is read recursively. `.txt`, `.md`, `.rst` and `.html`/`.htm` files are documents: the id is the
file's path below the folder, the title its first heading (or its file name), the text its content (HTML
tags dropped). Other files are left out, with one line saying how many. A JSONL file (or a folder holding
`corpus.jsonl`) is read in the BEIR layout, `{"_id", "title", "text"}` a line.

Every document is cut into passages of about PASSAGE_WORDS words at paragraph boundaries, so a long file is
searched by its parts; a passage's id is its document's id plus `#N` (N from 1), which is how a hit maps back
to its document (`document_of`). The corpus is written once under a folder named for its content, so the
same documents reuse their indexes and their trained model, and changed ones get new ones.

Bad input is refused before anything is written, with a message that names what to fix: a folder with no
documents, a file that is not UTF-8 text, a file too large to serve, duplicate ids, or documents that are all
empty.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

from corpora.stdlib import CORPUS_FILE, write_corpus
from search_common.corpus_file import DatasetError, iter_corpus
from search_common.documents import Document

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".md", ".rst", ".html", ".htm"})
PASSAGE_WORDS = 200
MAX_FILE_BYTES = 20 * 1024 * 1024
PASSAGE_MARK = "#"


class CorpusError(ValueError):
    """The documents cannot become a corpus; the message says which and why."""


def document_of(passage_id: str) -> str:
    """The document a passage id belongs to ("notes/a.md#3" -> "notes/a.md")."""
    head, mark, number = passage_id.rpartition(PASSAGE_MARK)
    return head if mark and number.isdigit() else passage_id


class _TextOf(HTMLParser):
    """The visible text of an HTML page: script and style dropped, block ends kept as paragraph breaks."""

    _HIDDEN = frozenset({"script", "style", "head"})
    _BLOCKS = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.title = ""
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        self._in_title = tag in ("title", "h1") and not self.title

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        if tag in self._BLOCKS:
            self.parts.append("\n\n")
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and data.strip():
            self.title = data.strip()
        if not self._hidden:
            self.parts.append(data)


def _title_and_text(path: Path, raw: str) -> tuple[str, str]:
    if path.suffix in (".html", ".htm"):
        parser = _TextOf()
        parser.feed(raw)
        return parser.title or path.stem, "".join(parser.parts)
    lines = raw.splitlines()
    for index, line in enumerate(lines[:20]):
        stripped = line.strip()
        if stripped.startswith("#"):  # a Markdown heading
            return stripped.lstrip("#").strip() or path.stem, raw
        underline = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if stripped and underline and set(underline) <= set("=-~^*") and len(underline) >= len(stripped):
            return stripped, raw  # a reStructuredText title
    return path.stem, raw


def _read_folder(folder: Path) -> list[Document]:
    documents: list[Document] = []
    skipped = 0
    undecodable: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if path.suffix.lower() not in TEXT_SUFFIXES or any(part.startswith(".") for part in path.parts):
            skipped += 1
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CorpusError(
                f"{relative} is {size / 2**20:.0f} MiB; files up to {MAX_FILE_BYTES // 2**20} MiB are read: "
                "split it into several files"
            )
        try:
            raw = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            undecodable.append(relative)
            continue
        if "\x00" in raw:
            undecodable.append(relative)
            continue
        title, text = _title_and_text(path, raw)
        documents.append(Document(relative, title, text))
    if undecodable:
        raise CorpusError(
            f"{len(undecodable)} file(s) are not UTF-8 text ({', '.join(undecodable[:5])}"
            f"{', ...' if len(undecodable) > 5 else ''}): convert them to UTF-8 or move them out of {folder}"
        )
    if skipped:
        logger.warning("%d file(s) under %s are not %s and were left out", skipped, folder,
                       "/".join(sorted(TEXT_SUFFIXES)))  # fmt: skip
    return documents


def _read_jsonl(path: Path) -> list[Document]:
    try:
        documents = list(iter_corpus(path))
    except DatasetError as exc:
        raise CorpusError(str(exc)) from None
    for document in documents:  # iter_corpus already refuses duplicate ids, naming the line
        if PASSAGE_MARK in document.doc_id:
            raise CorpusError(
                f"{path}: the id {document.doc_id!r} holds {PASSAGE_MARK!r}, which marks passages"
            )
    return documents


def read_user_documents(source: Path) -> list[Document]:
    """The documents under `source` (a folder, a JSONL file, or a BEIR folder), empty ones left out.

    Raises:
        CorpusError: what is wrong, naming the file.
    """
    if source.is_file() and source.suffix == ".jsonl":
        documents = _read_jsonl(source)
    elif (source / CORPUS_FILE).is_file():
        documents = _read_jsonl(source / CORPUS_FILE)
    elif source.is_dir():
        documents = _read_folder(source)
    else:
        raise CorpusError(f"{source}: not a folder of documents, a .jsonl file or a BEIR folder")
    empty = [d.doc_id for d in documents if not d.text.strip()]
    kept = [d for d in documents if d.text.strip()]
    if empty:
        logger.warning("%d empty document(s) left out (%s%s)", len(empty), ", ".join(empty[:5]),
                       ", ..." if len(empty) > 5 else "")  # fmt: skip
    if not kept:
        raise CorpusError(
            f"{source}: no documents with text (read {', '.join(sorted(TEXT_SUFFIXES))} files, or a .jsonl)"
        )
    return kept


def passages(documents: Iterable[Document], words: int = PASSAGE_WORDS) -> list[Document]:
    """Each document cut at paragraph boundaries into passages of about `words` words (a longer paragraph is
    cut by words); a document of one passage keeps its id, others get `#1`, `#2`, ..."""
    result: list[Document] = []
    for document in documents:
        chunks: list[str] = []
        current: list[str] = []
        for paragraph in re.split(r"\n\s*\n", document.text):
            tokens = paragraph.split()
            while tokens:
                room = words - len(current)
                if room <= 0:
                    chunks.append(" ".join(current))
                    current, room = [], words
                current.extend(tokens[:room])
                tokens = tokens[room:]
            if len(current) >= words // 2:  # a paragraph boundary is a good place to cut
                chunks.append(" ".join(current))
                current = []
        if current:
            chunks.append(" ".join(current))
        if len(chunks) == 1:
            result.append(Document(document.doc_id, document.title, chunks[0]))
        else:
            result.extend(
                Document(f"{document.doc_id}{PASSAGE_MARK}{n}", document.title, chunk)
                for n, chunk in enumerate(chunks, start=1)
            )
    return result


def build_user_corpus(source: Path, out_root: Path) -> Path:
    """The corpus.jsonl of `source`'s passages, under a folder of `out_root` named for their content; written
    once, reused while the documents are the same.

    Raises:
        CorpusError: the documents cannot become a corpus (nothing is written then).
    """
    parts = passages(read_user_documents(source))
    digest = hashlib.sha256()
    for part in parts:
        digest.update("\x1f".join((part.doc_id, part.title, part.text)).encode("utf-8") + b"\x1e")
    out_dir = out_root / f"user-{digest.hexdigest()[:12]}"
    if not (out_dir / CORPUS_FILE).is_file():
        logger.info("writing %d passages of %s to %s", len(parts), source, out_dir)
        write_corpus(out_dir, parts)
    return out_dir / CORPUS_FILE
