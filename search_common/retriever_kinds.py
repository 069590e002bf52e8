"""The retriever kinds ("dense", "bm25") and their `search.v1.RetrieverKind` numbers: one table for the
retriever service, which writes them, and the gateway, which reads them."""

from __future__ import annotations

from search.v1 import retriever_pb2

from search_common.documents import RetrieverKind

_KINDS: tuple[tuple[RetrieverKind, retriever_pb2.RetrieverKind], ...] = (
    ("dense", retriever_pb2.RETRIEVER_KIND_DENSE),
    ("bm25", retriever_pb2.RETRIEVER_KIND_BM25),
)
_KIND_NUMBERS: dict[str, retriever_pb2.RetrieverKind] = dict(_KINDS)
_KIND_NAMES: dict[int, RetrieverKind] = {number: name for name, number in _KINDS}


def kind_number(kind: str) -> retriever_pb2.RetrieverKind:
    """The wire number of a kind (a group name too); RETRIEVER_KIND_UNSPECIFIED for any other name."""
    return _KIND_NUMBERS.get(kind, retriever_pb2.RETRIEVER_KIND_UNSPECIFIED)


def kind_name(number: int) -> RetrieverKind | None:
    """The kind a wire number names; None for UNSPECIFIED or a number this build does not know."""
    return _KIND_NAMES.get(number)
