"""The reranker's two narrow ports: something that scores pairs, and a score cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Scorer(Protocol):
    """A cross-encoder: one float32 score per text against the query, in input order.

    Adapters: `backends.embedded.EmbeddedScorer` (in process: ONNX Runtime or a torch program),
    `backends.triton.TritonScorer`.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def model_version(self) -> str: ...

    @property
    def max_length(self) -> int:
        """The model's tokens per (query, document) pair."""
        ...

    @property
    def engine(self) -> str:
        """What computes the scores ("onnx", "torch", "triton-torch", "triton-onnx-cuda"): engines and devices
        round differently (int8, bfloat16, GPU kernels), so it labels the model-info metric and is part of
        every score-cache key."""
        ...

    async def start(self) -> None:
        """Connects and learns the model's identity; idempotent. Raises Unavailable if it cannot."""
        ...

    async def score(
        self, query: str, texts: Sequence[str], max_length: int | None = None
    ) -> npt.NDArray[np.float32]: ...

    async def close(self) -> None: ...


class ScoreCache(Protocol):
    """Scores by key. Adapters never raise on a cache outage: they miss, skip the write and count it.

    Adapters: `cache.redis.RedisScoreCache`, `cache.lru.LruScoreCache`.
    """

    @property
    def errors(self) -> int:
        """Cache operations bypassed because the cache failed, since start."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[float | None]: ...

    async def put_many(self, items: Mapping[str, float]) -> None: ...

    async def close(self) -> None: ...
