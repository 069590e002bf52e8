"""Several shards of one index served by one process: the query is encoded once, the shards are searched in
parallel threads (FAISS and bm25s's scoring release the GIL), and their lists are merged exactly.

Small hosts run one retriever process for every shard instead of one process per shard (each costs a
gRPC hop and a Python interpreter's memory); a cluster still runs one shard per pod. The answer names every
shard it covers, so the gateway's coverage and version reporting stay per shard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from retriever_service.shards import ShardRetriever, retrieve_off_loop
from search_common.documents import QueryEmbedding, RetrievalResult, ShardDescription, shards_component
from search_common.ranking import merge_shards


class ShardGroup:
    """Shards of one index version, one kind, in one process; the `search_common.ports.Retriever` port."""

    def __init__(self, shards: Sequence[ShardRetriever[Any]]) -> None:
        if not shards:
            raise ValueError("a shard group needs at least one shard")
        first = shards[0].shard
        for retriever in shards[1:]:
            shard = retriever.shard
            if (shard.kind, shard.index_name, shard.index_version, shard.num_shards, shard.encoder) != (
                first.kind,
                first.index_name,
                first.index_version,
                first.num_shards,
                first.encoder,
            ):
                raise ValueError(
                    f"{shard.component} of {shard.index_name} {shard.index_version} cannot be served beside "
                    f"{first.component} of {first.index_name} {first.index_version}: one process serves one "
                    "version of one index of each kind"
                )
        ids = [r.shard.shard_id for r in shards]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{first.kind} shard ids repeat: {sorted(ids)}")
        self._shards = sorted(shards, key=lambda r: r.shard.shard_id)
        self._pool = ThreadPoolExecutor(len(shards), thread_name_prefix=f"{first.kind}-shards")

    @property
    def component(self) -> str:
        return shards_component(self.shards)

    @property
    def shards(self) -> tuple[ShardDescription, ...]:
        return tuple(r.shard for r in self._shards)

    @property
    def shard_count(self) -> int:
        return len(self._shards)

    async def describe(self, timeout: float | None = None) -> ShardDescription:
        return self._shards[0].shard

    async def describe_all(self, timeout: float | None = None) -> tuple[ShardDescription, ...]:
        return self.shards

    def _search_text(
        self, text: str, k: int, given: Any | None, with_vectors: bool = False
    ) -> RetrievalResult:
        """Encodes once (unless the caller embedded), searches every shard at once, merges the exact top-k."""
        timings: dict[str, float] = {}
        if given is None:
            started = time.perf_counter()
            given = self._shards[0].encode(text)  # one index, one encoder: any shard encodes for all
            timings["embed"] = time.perf_counter() - started
        searched = time.perf_counter()
        lists = list(self._pool.map(lambda r: r.search(given, k, with_vectors), self._shards))
        timings["search"] = time.perf_counter() - searched
        return RetrievalResult(
            candidates=merge_shards(lists, k),
            shard=self._shards[0].shard,
            timings=timings,
            shards=self.shards,
        )

    async def retrieve(
        self,
        query: str,
        k: int,
        timeout: float | None = None,
        *,
        embedding: QueryEmbedding | None = None,
        with_vectors: bool = False,
    ) -> RetrievalResult:
        # One index, one set of limits and one encoder: the first shard checks for all.
        return await retrieve_off_loop(
            self._shards[0], self._search_text, self.component, query, k, timeout, embedding, with_vectors
        )

    async def close(self) -> None:
        self._pool.shutdown(wait=False)
        for retriever in self._shards:
            await retriever.close()
