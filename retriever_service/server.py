"""Builds and runs the retriever gRPC server: service, health, reflection, readiness, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health
from prometheus_client import disable_created_metrics, start_http_server
from search.v1 import retriever_pb2

from retriever_service.bootstrap import build_retriever
from retriever_service.config import Settings
from retriever_service.metrics import RetrieverMetrics
from retriever_service.servicer import RetrieverServicer
from search_common.artifacts import ArtifactError
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

    async def mark_ready(self, retriever: Retriever) -> None:
        """Warms the retriever with one query, attaches it, publishes the shard, and reports SERVING."""
        await retriever.retrieve(WARMUP_QUERY, 1)
        shard = await retriever.describe()
        self.metrics.set_shard(shard)
        self.servicer.attach(retriever, shard)
        await set_serving(self.health, [SERVICE_NAME], serving=True)
        logger.info("serving %s on port %d", retriever.component, self.port)

    async def swap(self, retriever: Retriever) -> Retriever:
        """Hot swap: warms a freshly loaded shard beside the served one, checks it is the same shard of a
        new version, then serves it; returns the old retriever (its in-flight requests still finish on it).

        Raises:
            ArtifactError: the new shard is another kind or shard id; the old one keeps serving.
        """
        old = self.servicer.retriever
        await retriever.retrieve(WARMUP_QUERY, 1)
        shard = await retriever.describe()
        if old is not None:
            before = await old.describe()
            same = (before.kind, before.shard_id, before.num_shards)
            if (shard.kind, shard.shard_id, shard.num_shards) != same:
                raise ArtifactError(
                    f"reload refused: {shard.component} of {shard.num_shards} is not the served "
                    f"{before.component} of {before.num_shards}"
                )
        self.metrics.set_shard(shard)
        self.servicer.attach(retriever, shard)  # one reference assignment: requests see old or new
        logger.info("swapped in %s version %s", shard.component, shard.index_version)
        assert old is not None
        return old


def build_server(
    settings: Settings, retriever: Retriever | None = None, metrics: RetrieverMetrics | None = None
) -> RetrieverServer:
    """Creates the server and binds its port; health starts NOT_SERVING until `mark_ready`.

    Without `metrics` the server counts into a private registry nobody scrapes (tests, in-process use).
    """
    server = new_server()
    metrics = metrics or RetrieverMetrics(registry=None)
    servicer = RetrieverServicer(
        retriever, max_top_k=settings.max_top_k, max_query_chars=settings.max_query_chars, metrics=metrics
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
    built = build_server(settings, retriever, metrics)
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
    logger.info("listening on %s:%d; loading %s", settings.host, built.port, settings.index)
    try:
        retriever = await asyncio.to_thread(build_retriever, settings)
        await built.mark_ready(retriever)
    except BaseException:
        await built.server.stop(0)
        raise
    if settings.port_file is not None:
        write_port_file(settings.port_file, built.port)
    reloader = IndexReloader(settings, built, retriever)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)

    async def close_current() -> None:
        await reloader.close()

    await run_until_signal(built.server, built.health, settings.grace_seconds, cleanups=[close_current])


class IndexReloader(SignalReloader):
    """SIGHUP loads `--index` again (resolving symlinks once, so that an index root whose `current` link
    was switched to a new version is read from that version only), validates and warms it beside the
    served shard and swaps it in. A shard that does not load is logged and the old one keeps serving.
    The old shard is closed after `grace_seconds`, once the requests still running on it have finished.
    """

    def __init__(self, settings: Settings, built: RetrieverServer, retriever: Retriever) -> None:
        super().__init__(settings.grace_seconds, "index")
        self._settings = settings
        self._built = built
        self._current = retriever

    async def reload(self) -> None:
        resolved = replace(self._settings, index=self._settings.index.resolve())
        logger.info("reloading the index from %s", resolved.index)
        try:
            fresh = await asyncio.to_thread(build_retriever, resolved)
            old = await self._built.swap(fresh)
        except Exception as exc:  # a bad new version never takes down the served one
            logger.error("index reload refused, still serving the old version: %s", exc)
            return
        self._current = fresh
        self.retire(old)

    async def close(self) -> None:
        self.cancel()
        await self._current.close()
