"""Domain types shared by every stage: documents, scored candidates, shard descriptions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

RetrieverKind = Literal["dense", "bm25"]


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    title: str
    text: str

    def model_text(self) -> str:
        """The text models see: title and body, as BEIR evaluates SciFact."""
        return f"{self.title}. {self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Candidate:
    document: Document
    score: float
    # The document's stored vector, when a dense shard was asked for it (pseudo-relevance feedback).
    vector: npt.NDArray[np.float32] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ShardDescription:
    kind: RetrieverKind
    shard_id: int
    num_shards: int
    index_name: str
    index_version: str
    num_documents: int
    encoder: str = ""

    @property
    def component(self) -> str:
        """Bounded label for metrics and metadata, for example 'dense/shard-0'."""
        return f"{self.kind}/shard-{self.shard_id}"


@dataclass(frozen=True, slots=True, eq=False)
class QueryEmbedding:
    """A query embedded once by the caller, for every dense shard of the encoder named by `encoder`.

    `values` is the 1-D float32 vector; `encoder` the identity a dense shard reports in
    `ShardDescription.encoder` ("<name>@<sha256 prefix>").
    """

    values: npt.NDArray[np.float32]
    encoder: str


@dataclass(slots=True)
class RetrievalResult:
    candidates: list[Candidate]
    shard: ShardDescription
    # Stage name -> seconds, measured where the stage ran.
    timings: dict[str, float] = field(default_factory=dict)
    # Every shard the candidates cover, when one process searched several; empty means `shard` alone.
    shards: tuple[ShardDescription, ...] = ()

    @property
    def covered(self) -> tuple[ShardDescription, ...]:
        return self.shards or (self.shard,)


def shards_component(shards: Sequence[ShardDescription]) -> str:
    """A bounded label for shards of one kind: 'dense/shard-0' for one, 'dense/shards-0-2' for a run of
    them, 'dense/shards-0+2' otherwise."""
    ids = sorted(s.shard_id for s in shards)
    kind = shards[0].kind
    if len(ids) == 1:
        return f"{kind}/shard-{ids[0]}"
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"{kind}/shards-{ids[0]}-{ids[-1]}"
    return f"{kind}/shards-" + "+".join(map(str, ids))


@dataclass(slots=True)
class RerankResult:
    # One score per input document, in input order.
    scores: list[float]
    model_name: str
    model_version: str
    cache_hits: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    # The score cache failed during this request: every score was computed (complete, but slower).
    cache_bypassed: bool = False
