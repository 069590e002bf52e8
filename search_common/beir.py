"""Readers for the BEIR dataset layout: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

Malformed input raises DatasetError naming the file and the 1-based line, so a user can fix it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from search_common.documents import Document


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Query:
    query_id: str
    text: str


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DatasetError(f"{path}:{line_no}: not valid UTF-8 JSON ({exc})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            yield line_no, record


def _string_field(record: dict[str, object], key: str, path: Path, line_no: int, required: bool) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise DatasetError(f"{path}:{line_no}: missing field {key!r}")
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "_id":
        return str(value)
    if not isinstance(value, str):
        raise DatasetError(f"{path}:{line_no}: field {key!r} must be a string")
    return value


def iter_corpus(path: Path) -> Iterator[Document]:
    """Yields the documents of a corpus.jsonl file, checking ids are present and unique."""
    seen: set[str] = set()
    for line_no, record in _json_lines(path):
        doc_id = _string_field(record, "_id", path, line_no, required=True)
        if not doc_id:
            raise DatasetError(f"{path}:{line_no}: empty '_id'")
        if doc_id in seen:
            raise DatasetError(f"{path}:{line_no}: duplicate '_id' {doc_id!r}")
        seen.add(doc_id)
        yield Document(
            doc_id=doc_id,
            title=_string_field(record, "title", path, line_no, required=False),
            text=_string_field(record, "text", path, line_no, required=True),
        )


def load_corpus(path: Path) -> list[Document]:
    return list(iter_corpus(path))


def load_queries(path: Path) -> dict[str, Query]:
    queries: dict[str, Query] = {}
    for line_no, record in _json_lines(path):
        query_id = _string_field(record, "_id", path, line_no, required=True)
        queries[query_id] = Query(query_id, _string_field(record, "text", path, line_no, required=True))
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Reads a qrels TSV with a header line into {query_id: {doc_id: relevance}}."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for line_no, row in enumerate(reader, start=1):
            if line_no == 1 and row and row[0] == "query-id":
                continue
            if not row:
                continue
            if len(row) != 3:
                raise DatasetError(f"{path}:{line_no}: expected 3 tab-separated columns, got {len(row)}")
            try:
                relevance = int(row[2])
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: relevance {row[2]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[1]] = relevance
    return qrels


@dataclass(frozen=True)
class BeirDataset:
    """A dataset folder in the BEIR layout."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    def corpus(self) -> list[Document]:
        return load_corpus(self.corpus_path)

    def queries(self) -> dict[str, Query]:
        return load_queries(self.root / "queries.jsonl")

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        return load_qrels(self.root / "qrels" / f"{split}.tsv")

    def split_queries(self, split: str) -> tuple[list[Query], dict[str, dict[str, int]]]:
        """The queries that have judgements in a split, in id order, with those judgements."""
        qrels = self.qrels(split)
        queries = self.queries()
        missing = sorted(set(qrels) - set(queries))
        if missing:
            raise DatasetError(f"{self.root}: qrels/{split}.tsv names unknown query ids, e.g. {missing[:3]}")
        return [queries[q] for q in sorted(qrels)], qrels
