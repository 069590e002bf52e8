"""Build the gateway's gRPC server in one function, run it in another (health, reflection, graceful stop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import grpc
from grpc_health.v1 import health
from prometheus_client import disable_created_metrics, start_http_server
from search.v1 import search_service_pb2, search_service_pb2_grpc

from gateway.bootstrap import Gateway, bootstrap, load_models, wait_until_ready
from gateway.config import Settings
from gateway.local_stages import start_local_reranker
from gateway.metrics import GatewayMetrics
from gateway.overload import watch_event_loop_lag
from gateway.pipeline import SearchPipeline
from gateway.servicer import RequestLimits, SearchServicer
from gateway.variant_reload import LiveVariants
from gateway.variants import VariantTable
from search_common.grpc_server import (
    add_standard_services,
    bind,
    new_server,
    run_until_signal,
    set_serving,
)
from search_common.port_file import write_port_file

logger = logging.getLogger(__name__)

SERVICE_NAME = search_service_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name


class BoundServer(NamedTuple):
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer


def create_server(
    settings: Settings,
    pipeline: SearchPipeline,
    variants: VariantTable | LiveVariants,
    limits: RequestLimits | None = None,
    metrics: GatewayMetrics | None = None,
) -> BoundServer:
    """A bound, not yet started server; health reports NOT_SERVING until `set_serving` is called."""
    server = new_server()
    servicer = SearchServicer(
        pipeline,
        variants,
        limits
        or RequestLimits(
            settings.max_top_k,
            settings.max_query_chars,
            settings.max_retrieval_depth,
            settings.max_rerank_depth,
        ),
        settings.default_deadline_seconds,
        metrics,
    )
    search_service_pb2_grpc.add_SearchServiceServicer_to_server(servicer, server)
    health_servicer = add_standard_services(server, [SERVICE_NAME], settings.reflection)
    port = bind(server, settings.address, None if settings.tls is None else settings.tls.credentials())
    return BoundServer(server, port, health_servicer)


async def open_gateway(
    settings: Settings, gateway: Gateway, metrics: GatewayMetrics | None = None
) -> BoundServer:
    """Starts the server reporting NOT_SERVING (the health servicer defaults "" to SERVING otherwise)."""
    bound = create_server(settings, gateway.pipeline, gateway.live_variants, gateway.limits, metrics)
    await set_serving(bound.health, [SERVICE_NAME], False)
    await bound.server.start()
    return bound


async def mark_ready(settings: Settings, gateway: Gateway, bound: BoundServer) -> None:
    """Waits for every retriever group, then reports SERVING and writes the port file."""
    encoder = gateway.pipeline.query_encoder
    await wait_until_ready(
        gateway.retrievers,
        settings.startup_timeout_seconds,
        None if encoder is None else encoder.identity,
    )
    await set_serving(bound.health, [SERVICE_NAME], True)
    if settings.port_file is not None:
        write_port_file(Path(settings.port_file), bound.port)
    logger.info(
        "gateway serving on %s:%d (groups %s, reranker %s, variants %s, default %s)",
        settings.host,
        bound.port,
        ", ".join(gateway.pipeline.groups),
        "yes" if gateway.reranker is not None else "none",
        ", ".join(n for n in gateway.variants.names if n not in gateway.variants.unservable),
        gateway.variants.default_name,
    )


async def start_gateway(
    settings: Settings, gateway: Gateway, metrics: GatewayMetrics | None = None
) -> BoundServer:
    """`open_gateway` then `mark_ready`; the server is stopped again if readiness fails."""
    bound = await open_gateway(settings, gateway, metrics)
    try:
        await mark_ready(settings, gateway, bound)
    except BaseException:
        await bound.server.stop(0)
        raise
    return bound


def watch_variants(live: LiveVariants, metrics: GatewayMetrics) -> None:
    """Publishes the variants' weights now and after every reload, and counts reload results."""
    table = live.current
    metrics.set_variants(table.variants.values(), table.unservable)

    def on_reload(new: VariantTable | None) -> None:
        metrics.record_reload(new is not None)
        if new is not None:
            metrics.prepare(new.variants.values(), ())  # series of added variants start at zero too
            metrics.set_variants(new.variants.values(), new.unservable)

    live.set_listener(on_reload)


async def serve(settings: Settings) -> None:
    """Runs the gateway until SIGTERM/SIGINT, then drains and closes its channels.

    SIGHUP, or a change to the variants file on disk (polled), reloads the variants without a restart.
    """
    query_encoder, local = await asyncio.to_thread(load_models, settings)
    gateway = bootstrap(settings, query_encoder=query_encoder, local=local)
    if local.reranker is not None:
        try:
            await start_local_reranker(local.reranker, settings.startup_timeout_seconds)
        except BaseException:
            await gateway.close()
            raise
    if settings.metrics_port is not None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise here
    metrics = GatewayMetrics()
    components = [shard.component for shards in gateway.retrievers.values() for shard in shards]
    metrics.prepare(
        gateway.variants.variants.values(), [*components, "reranker"] if gateway.reranker else components
    )
    watch_variants(gateway.live_variants, metrics)
    metrics.watch_overload(gateway.pipeline.answer_margin, gateway.pipeline.rerank_admission)
    try:
        bound = await start_gateway(settings, gateway, metrics)
    except BaseException:
        await gateway.close()
        raise
    cleanups: list[Callable[[], Awaitable[None]]] = [gateway.close]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, gateway.live_variants.reload)
    watcher = asyncio.create_task(gateway.live_variants.watch(settings.variants_poll_seconds))

    async def stop_watching() -> None:
        loop.remove_signal_handler(signal.SIGHUP)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    cleanups.insert(0, stop_watching)
    # The event loop's lag is the gateway's own cost of answering: the margin every deadline keeps.
    lag_watcher = asyncio.create_task(watch_event_loop_lag(gateway.pipeline.answer_margin))

    async def stop_lag_watcher() -> None:
        lag_watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_watcher

    cleanups.insert(0, stop_lag_watcher)
    if settings.metrics_port is not None:
        metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.host)
        logger.info("metrics on http://%s:%d/metrics", settings.host, metrics_server.server_port)

        async def stop_metrics() -> None:
            metrics_server.shutdown()

        cleanups.append(stop_metrics)
    await run_until_signal(bound.server, bound.health, settings.grace_seconds, cleanups=cleanups)
