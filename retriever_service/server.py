"""Builds and runs the retriever gRPC server: service, health, reflection, readiness, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health
from prometheus_client import disable_created_metrics, start_http_server
from search.v1 import retriever_pb2

from retriever_service.bootstrap import build_retrievers
from retriever_service.config import Settings
from retriever_service.metrics import RetrieverMetrics
from retriever_service.servicer import RetrieverServicer, Served, describe_served
from search_common.artifacts import ArtifactError
from search_common.documents import shards_component
from search_common.grpc_server import (
    add_standard_services,
    bind,
    new_server,
    run_until_signal,
    set_serving,
)
from search_common.hot_swap import SignalReloader
from search_common.port_file import write_port_file
from search_common.ports import Retriever

logger = logging.getLogger(__name__)

SERVICE_NAME = retriever_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name
WARMUP_QUERY = "warm up the retriever"


@dataclass(slots=True)
class RetrieverServer:
    """A built, not yet started server and the handles `serve` needs to drive readiness."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    servicer: RetrieverServicer
    metrics: RetrieverMetrics

    async def mark_ready(self, retrievers: Sequence[Retriever]) -> None:
        """Warms each retriever with one query, attaches them, publishes their shards, reports SERVING."""
        self._serve(retrievers, await _warmed(retrievers))
        await set_serving(self.health, [SERVICE_NAME], serving=True)
        logger.info("serving %s on port %d", ", ".join(r.component for r in retrievers), self.port)

    async def swap(self, retrievers: Sequence[Retriever]) -> tuple[Retriever, ...]:
        """Hot swap: warms freshly loaded shards beside the served ones, checks they are the same shards of a
        new version, then serves them; returns the old retrievers (their in-flight requests still finish).

        Raises:
            ArtifactError: the new shards are other kinds or shard ids; the old ones keep serving.
        """
        old, served_before = self.servicer.retrievers, self.servicer.served
        if served_before is None and old:  # given at construction and never asked: describe them now
            served_before = await describe_served(old)
        served = await _warmed(retrievers)
        fresh = _shard_set(served)
        if served_before is not None and fresh != (before := _shard_set(served_before)):
            raise ArtifactError(
                f"reload refused: the new index holds shards {sorted(fresh)}, the served one {sorted(before)}"
            )
        self._serve(retrievers, served)  # one reference assignment: requests see old or new
        for _, shards in served.values():
            logger.info("swapped in %s version %s", shards_component(shards), shards[0].index_version)
        return old

    def _serve(self, retrievers: Sequence[Retriever], served: Served) -> None:
        self.metrics.set_shards([shard for _, shards in served.values() for shard in shards])
        self.servicer.attach(retrievers, served)


async def _warmed(retrievers: Sequence[Retriever]) -> Served:
    """Each retriever warmed with one query (its first call pays one-off setup), then described by kind."""
    for retriever in retrievers:
        await retriever.retrieve(WARMUP_QUERY, 1)
    return await describe_served(retrievers)


def _shard_set(served: Served) -> set[tuple[str, int, int]]:
    return {(s.kind, s.shard_id, s.num_shards) for _, shards in served.values() for s in shards}


def build_server(
    settings: Settings, retrievers: Sequence[Retriever] = (), metrics: RetrieverMetrics | None = None
) -> RetrieverServer:
    """Creates the server and binds its port; health starts NOT_SERVING until `mark_ready`.

    Without `metrics` the server counts into a private registry nobody scrapes (tests, in-process use).
    """
    server = new_server()
    metrics = metrics or RetrieverMetrics(registry=None)
    servicer = RetrieverServicer(
        retrievers, max_top_k=settings.max_top_k, max_query_chars=settings.max_query_chars, metrics=metrics
    )
    from search.v1 import retriever_pb2_grpc

    retriever_pb2_grpc.add_RetrieverServiceServicer_to_server(servicer, server)
    health_servicer = add_standard_services(server, [SERVICE_NAME], settings.reflection)
    port = bind(server, settings.address, None if settings.tls is None else settings.tls.credentials())
    return RetrieverServer(server, port, health_servicer, servicer, metrics)


def create_server(
    settings: Settings, retriever: Retriever, metrics: RetrieverMetrics | None = None
) -> tuple[grpc.aio.Server, int]:
    """A server answering Retrieve with an already loaded retriever (in-process use and tests).

    Health for the service stays unset until someone marks it; `serve` uses `build_server` to report
    NOT_SERVING while loading and SERVING once warmed.
    """
    built = build_server(settings, [retriever], metrics)
    return built.server, built.port


async def serve(settings: Settings) -> None:
    """Starts NOT_SERVING, loads and warms the shard off the event loop, serves until SIGTERM/SIGINT."""
    metrics: RetrieverMetrics | None = None
    if settings.metrics_port is not None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise here
        metrics = RetrieverMetrics()
        metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.host)
        logger.info("metrics on http://%s:%d/metrics", settings.host, metrics_server.server_port)
    built = build_server(settings, metrics=metrics)
    await set_serving(built.health, [SERVICE_NAME], serving=False)
    await built.server.start()
    logger.info(
        "listening on %s:%d; loading %s", settings.host, built.port, ", ".join(map(str, settings.indexes))
    )
    try:
        retrievers = await asyncio.to_thread(build_retrievers, settings)
        await built.mark_ready(retrievers)
    except BaseException:
        await built.server.stop(0)
        raise
    if settings.port_file is not None:
        write_port_file(settings.port_file, built.port)
    reloader = IndexReloader(settings, built, retrievers)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)

    async def close_current() -> None:
        await reloader.close()

    await run_until_signal(built.server, built.health, settings.grace_seconds, cleanups=[close_current])


class IndexReloader(SignalReloader):
    """SIGHUP loads every `--index` again (resolving symlinks once, so that an index root whose `current`
    link was switched to a new version is read from that version only), validates and warms it beside the
    served shards and swaps it in. Shards that do not load are logged and the old ones keep serving.
    The old shards are closed after `grace_seconds`, once the requests still running on them have finished.
    """

    def __init__(self, settings: Settings, built: RetrieverServer, retrievers: Sequence[Retriever]) -> None:
        super().__init__(settings.grace_seconds, "index")
        self._settings = settings
        self._built = built
        self._current = tuple(retrievers)

    async def reload(self) -> None:
        resolved = replace(
            self._settings,
            index=self._settings.index.resolve(),
            more_indexes=tuple(path.resolve() for path in self._settings.more_indexes),
        )
        logger.info("reloading the index from %s", ", ".join(map(str, resolved.indexes)))
        try:
            fresh = await asyncio.to_thread(build_retrievers, resolved)
            old = await self._built.swap(fresh)
        except Exception as exc:  # a bad new version never takes down the served one
            logger.error("index reload refused, still serving the old version: %s", exc)
            return
        self._current = tuple(fresh)
        for retriever in old:
            self.retire(retriever)

    async def close(self) -> None:
        self.cancel()
        for retriever in self._current:
            await retriever.close()
