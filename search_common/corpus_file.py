"""The corpus file every index is built from: `corpus.jsonl`, one document a line (`{"_id", "title",
"text"}`, the BEIR layout). Malformed input raises DatasetError naming the file and the 1-based line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from search_common.documents import Document


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
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


def string_field(record: dict[str, object], key: str, path: Path, line_no: int, required: bool) -> str:
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
    for line_no, record in json_lines(path):
        doc_id = string_field(record, "_id", path, line_no, required=True)
        if not doc_id:
            raise DatasetError(f"{path}:{line_no}: empty '_id'")
        if doc_id in seen:
            raise DatasetError(f"{path}:{line_no}: duplicate '_id' {doc_id!r}")
        seen.add(doc_id)
        yield Document(
            doc_id=doc_id,
            title=string_field(record, "title", path, line_no, required=False),
            text=string_field(record, "text", path, line_no, required=True),
        )


def load_corpus(path: Path) -> list[Document]:
    return list(iter_corpus(path))
