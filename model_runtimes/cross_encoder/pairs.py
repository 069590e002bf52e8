"""Pure helpers over scored pairs: length order, padding, and a Triton request's pairs decoded, grouped
and split back (no engine, no pb_utils: unit-tested without Triton)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from model_runtimes.cross_encoder.contract import FloatArray, IntArray


def length_order(lengths: Sequence[int] | npt.NDArray[Any]) -> tuple[IntArray, IntArray]:
    """Longest-first order of items and its inverse permutation.

    Returns:
        (order, inverse): `values_sorted = values[order]` and `values_sorted[inverse]` is input order again.
        Ties keep input order (stable sort).
    """
    lengths_array = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths_array, kind="stable").astype(np.int64)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size, dtype=np.int64)
    return order, inverse


def batch_slices(count: int, batch_size: int) -> list[slice]:
    """Consecutive slices of at most batch_size items covering range(count)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def split_by_counts(values: npt.NDArray[Any], counts: Sequence[int]) -> list[npt.NDArray[Any]]:
    """Splits concatenated per-request results back into one array per request."""
    if sum(counts) != len(values):
        raise ValueError(f"counts sum to {sum(counts)} but there are {len(values)} values")
    offsets = np.cumsum([0, *counts])
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(counts))]


def pad_batch(
    encodings: Sequence[Sequence[int]],
    type_ids: Sequence[Sequence[int]],
    pad_id: int = 0,
    width: int | None = None,
) -> tuple[IntArray, IntArray, IntArray]:
    """Right-pads token ids to `width` (default: the longest sequence in the batch).

    Returns:
        (input_ids, attention_mask, token_type_ids), each int64 [batch, width].
    """
    longest = max((len(ids) for ids in encodings), default=0)
    if width is None:
        width = longest
    elif width < longest:
        raise ValueError(f"width {width} is shorter than the longest sequence ({longest})")
    input_ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    attention = np.zeros((len(encodings), width), dtype=np.int64)
    token_types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, (ids, types) in enumerate(zip(encodings, type_ids, strict=True)):
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
        token_types[row, : len(types)] = types
    return input_ids, attention, token_types


@dataclass(frozen=True, slots=True)
class PairRequest:
    """One inference request's pairs, decoded: the python backend's unit of success or failure."""

    queries: list[str]
    texts: list[str]
    max_length: int | None = None


def decode_pair_request(
    queries: npt.NDArray[Any] | None, texts: npt.NDArray[Any] | None, max_length: int | None = None
) -> PairRequest:
    """Turns a request's QUERY and DOCUMENT string tensors ([n, 1] or [n] of bytes) into a PairRequest.

    Raises:
        ValueError: a missing tensor, mismatched row counts, non-UTF-8 bytes or an empty query.
    """
    if queries is None or texts is None:
        raise ValueError("both QUERY and DOCUMENT tensors are required")
    query_rows, text_rows = queries.reshape(-1), texts.reshape(-1)
    if query_rows.size != text_rows.size:
        raise ValueError(
            f"QUERY has {query_rows.size} rows but DOCUMENT has {text_rows.size}; send one per pair"
        )
    try:
        decoded_queries = [_as_text(value) for value in query_rows]
        decoded_texts = [_as_text(value) for value in text_rows]
    except UnicodeDecodeError:
        raise ValueError("QUERY and DOCUMENT must be UTF-8 strings") from None
    if any(not q.strip() for q in decoded_queries):
        raise ValueError("QUERY must not be empty")
    return PairRequest(decoded_queries, decoded_texts, max_length)


def _as_text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


ScorePairs = Callable[[Sequence[str], Sequence[str], "int | None"], FloatArray]


def score_requests(score_pairs: ScorePairs, requests: Sequence[PairRequest]) -> list[FloatArray]:
    """Scores many requests' pairs in as few passes as possible and splits the scores back per request.

    Requests asking for the same max_length are concatenated and scored in one pass (the scorer sorts by
    length and batches); the result for request i holds one score per pair of request i, in order.
    """
    results: list[FloatArray] = [np.zeros(0, dtype=np.float32)] * len(requests)
    groups: dict[int | None, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.max_length, []).append(index)
    for max_length, members in groups.items():
        queries = [q for i in members for q in requests[i].queries]
        texts = [t for i in members for t in requests[i].texts]
        scores = score_pairs(queries, texts, max_length)
        for index, part in zip(
            members, split_by_counts(scores, [len(requests[i].texts) for i in members]), strict=True
        ):
            results[index] = part
    return results
