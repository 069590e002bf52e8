"""A bounded load generator for search.v1.SearchService over grpc.aio, recording every request's status.

`run_load` keeps `concurrency` clients (each with its own channel, as separate callers would have) busy
until `total` requests have finished, or longer while `keep_going()` says so, but never past
`max_requests` or `max_seconds`. Each request's outcome is kept: its gRPC status code (every code, not
only OK/error), whether the answer was degraded and which components degraded. Traffic is meant for
loopback stacks started by tests and bench scripts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from search.v1 import search_service_pb2, search_service_pb2_grpc

from search_common.grpc_server import message_size_options

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request: start and finish in `time.monotonic()` seconds, status code name, degradation."""

    started: float
    finished: float
    code: str
    degraded: bool
    degraded_components: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == "OK"


@dataclass(frozen=True, slots=True)
class LoadResult:
    records: list[RequestRecord]

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.records)

    @property
    def degraded(self) -> int:
        return sum(r.ok and r.degraded for r in self.records)

    def codes(self) -> dict[str, int]:
        return dict(Counter(r.code for r in self.records))


@dataclass(frozen=True, slots=True)
class Answer:
    """One open-loop request: status code, seconds to its answer, degradation reasons (enum names), and the
    gateway's own first-stage time (its `fanout` stage) when it answered."""

    code: str
    seconds: float
    reasons: tuple[str, ...] = ()
    first_stage_seconds: float | None = None


async def ask(
    stub: search_service_pb2_grpc.SearchServiceStub, query: str, *, timeout: float, variant: str = ""
) -> Answer:
    """One Search request, its outcome kept whatever the status."""
    request = search_service_pb2.SearchRequest(query=query, top_k=10, variant=variant)
    started = time.monotonic()
    try:
        response = await stub.Search(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return Answer(exc.code().name, time.monotonic() - started)
    seconds = time.monotonic() - started
    reasons = tuple(
        search_service_pb2.DegradationReason.Name(d.reason) for d in response.metadata.coverage.degradations
    )
    fanout = [
        t.duration.ToTimedelta().total_seconds() for t in response.metadata.timings if t.stage == "fanout"
    ]
    return Answer("OK", seconds, reasons, fanout[0] if fanout else None)


async def run_open_loop(
    target: str,
    queries: Sequence[str],
    rate: float,
    seconds: float,
    *,
    timeout: float = 5.0,
    variant: str = "",
    channels: int = 32,
) -> list[Answer]:
    """Arrivals at `rate` per second for `seconds`, sent whether or not earlier ones were answered (callers
    that do not wait for each other, unlike `run_load`'s), spread over `channels` channels."""
    opened = [grpc.aio.insecure_channel(target, options=message_size_options()) for _ in range(channels)]
    stubs = [search_service_pb2_grpc.SearchServiceStub(channel) for channel in opened]
    try:
        return await open_loop(
            rate,
            seconds,
            lambda i: ask(stubs[i % channels], queries[i % len(queries)], timeout=timeout, variant=variant),
        )
    finally:
        await asyncio.gather(*(channel.close() for channel in opened))


async def open_loop(rate: float, seconds: float, send: Callable[[int], Coroutine[Any, Any, T]]) -> list[T]:
    """Calls `send(i)` for arrival i at `rate` per second for `seconds`, each as its own task, whether or not
    earlier ones finished; their results in arrival order."""
    tasks: list[asyncio.Task[T]] = []
    started = time.monotonic()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(send(i)))
    return list(await asyncio.gather(*tasks))


def recovery_seconds(records: Sequence[RequestRecord], since: float) -> float:
    """Seconds from `since` until answers stopped being degraded or failing for good.

    The recovery point is when the last bad request started at or after `since` finished; 0 when none was.
    """
    bad = [r.finished for r in records if r.started >= since and (not r.ok or r.degraded)]
    return max(0.0, max(bad) - since) if bad else 0.0


async def run_load(
    target: str,
    queries: Sequence[str],
    *,
    total: int,
    concurrency: int = 16,
    timeout: float = 5.0,
    top_k: int = 10,
    variant: str = "",
    rerank_depth: int | None = None,
    keep_going: Callable[[], bool] | None = None,
    max_requests: int | None = None,
    max_seconds: float = 600.0,
    on_record: Callable[[RequestRecord], None] | None = None,
) -> LoadResult:
    """Sends Search requests from `concurrency` concurrent clients; returns every request's record.

    Args:
        target: the gateway's host:port.
        queries: cycled through in order.
        total: requests to send at least.
        keep_going: once `total` are sent, more are sent while this returns True.
        max_requests: hard bound on the count (default 3 × total).
        max_seconds: hard bound on the duration.
        on_record: called on the event loop after each request finishes.
    """
    if not queries:
        raise ValueError("run_load needs at least one query")
    limit = max_requests if max_requests is not None else 3 * total
    stop_at = time.monotonic() + max_seconds
    records: list[RequestRecord] = []
    issued = 0
    overrides = search_service_pb2.SearchOverrides(rerank_depth=rerank_depth)

    def next_index() -> int | None:
        nonlocal issued
        if issued >= limit or time.monotonic() >= stop_at:
            return None
        if issued >= total and (keep_going is None or not keep_going()):
            return None
        issued += 1
        return issued - 1

    async def client() -> None:
        async with grpc.aio.insecure_channel(target, options=message_size_options()) as channel:
            stub = search_service_pb2_grpc.SearchServiceStub(channel)
            while (index := next_index()) is not None:
                request = search_service_pb2.SearchRequest(
                    query=queries[index % len(queries)], top_k=top_k, variant=variant, overrides=overrides
                )
                started = time.monotonic()
                try:
                    response = await stub.Search(request, timeout=timeout)
                except grpc.aio.AioRpcError as exc:
                    record = RequestRecord(started, time.monotonic(), exc.code().name, False)
                    if len(records) < 50 or exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        logger.warning("request %d: %s %s", index, exc.code().name, exc.details())
                else:
                    coverage = response.metadata.coverage
                    record = RequestRecord(
                        started,
                        time.monotonic(),
                        "OK",
                        coverage.degraded,
                        tuple(sorted({d.component for d in coverage.degradations})),
                    )
                records.append(record)
                if on_record is not None:
                    on_record(record)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return LoadResult(records)
