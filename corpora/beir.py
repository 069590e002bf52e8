"""Readers for the BEIR dataset layout: corpus.jsonl (`search_common.corpus_file`), queries.jsonl and
qrels/<split>.tsv.

Malformed input raises DatasetError naming the file and the 1-based line, so a user can fix it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from search_common.corpus_file import DatasetError, json_lines, load_corpus, string_field
from search_common.documents import Document


@dataclass(frozen=True, slots=True)
class Query:
    query_id: str
    text: str


def load_queries(path: Path) -> dict[str, Query]:
    queries: dict[str, Query] = {}
    for line_no, record in json_lines(path):
        query_id = string_field(record, "_id", path, line_no, required=True)
        queries[query_id] = Query(query_id, string_field(record, "text", path, line_no, required=True))
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
