"""Builds and runs the reranker gRPC server: service, health, reflection, readiness, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health
from prometheus_client import disable_created_metrics, start_http_server
from search.v1 import reranker_pb2, reranker_pb2_grpc

from reranker_service.bootstrap import build_core, build_scorer
from reranker_service.config import Settings
from reranker_service.metrics import RerankerMetrics
from reranker_service.scoring import RerankCore
from reranker_service.servicer import RerankerServicer
from search_common.artifacts import ArtifactError, resolve_version
from search_common.errors import Unavailable
from search_common.grpc_server import (
    add_standard_services,
    bind,
    new_server,
    run_until_signal,
    set_serving,
)
from search_common.hot_swap import SignalReloader
from search_common.port_file import write_port_file

logger = logging.getLogger(__name__)

SERVICE_NAME = reranker_pb2.DESCRIPTOR.services_by_name["RerankerService"].full_name


@dataclass(slots=True)
class RerankerServer:
    """A built, not yet started server and the handles `serve` needs to drive readiness."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    servicer: RerankerServicer
    metrics: RerankerMetrics | None = None

    async def mark_ready(self, core: RerankCore) -> None:
        """Connects and warms the scorer, attaches the core, publishes the model, and reports SERVING."""
        await core.start()
        if self.metrics is not None:
            self.metrics.set_model(core.scorer.model_name, core.scorer.model_version, core.scorer.engine)
        self.servicer.attach(core)
        await set_serving(self.health, [SERVICE_NAME], serving=True)
        logger.info("serving %s %s on port %d", core.scorer.model_name, core.scorer.model_version, self.port)


def build_server(
    settings: Settings, core: RerankCore | None = None, metrics: RerankerMetrics | None = None
) -> RerankerServer:
    """Creates the server and binds its port; health stays NOT_SERVING until `mark_ready`."""
    server = new_server()
    servicer = RerankerServicer(core, metrics)
    reranker_pb2_grpc.add_RerankerServiceServicer_to_server(servicer, server)
    health_servicer = add_standard_services(server, [SERVICE_NAME], settings.reflection)
    port = bind(server, settings.address, None if settings.tls is None else settings.tls.credentials())
    return RerankerServer(server, port, health_servicer, servicer, metrics)


def create_server(settings: Settings, core: RerankCore) -> tuple[grpc.aio.Server, int]:
    """A server answering Rerank with `core` (health left to the caller; `serve` uses `build_server`)."""
    built = build_server(settings, core)
    return built.server, built.port


# With --wait-for-model: a text file in the artifact root that says what the model's producer is doing
# (e.g. "training: step 120/375"), quoted in the UNAVAILABLE answers while there is no model.
STATUS_FILE = "STATUS"


def waiting_status(root: Path) -> str:
    """What a reranker waiting for a model under `root` tells callers."""
    try:
        status = " ".join((root / STATUS_FILE).read_text(encoding="utf-8", errors="replace").split())[:200]
    except OSError:
        status = ""
    return f"waiting for a model under {root.name}" + (f" ({status})" if status else "")


async def serve(settings: Settings) -> None:
    """Binds, reports NOT_SERVING while the model loads, SERVING once warm; drains on SIGTERM.

    With `wait_for_model` and no model under the artifact root yet, the port file is written at once (the
    server answers UNAVAILABLE saying what it waits for) and the first version to appear is loaded.
    """
    if settings.wait_for_model and not _has_model(settings):
        await _serve_once_a_model_appears(settings)
        return
    metrics = RerankerMetrics()
    built = build_server(settings, metrics=metrics)
    await built.server.start()
    logger.info(
        "reranker listening on %s:%d (NOT_SERVING until the model is ready)", settings.host, built.port
    )
    try:
        _serve_metrics(settings)
        core = build_core(settings, metrics=metrics)
    except BaseException:
        await built.server.stop(0)
        raise
    try:
        await _wait_until_ready(built, core, settings.startup_timeout_seconds)
    except BaseException:
        await built.server.stop(0)
        await core.close()
        raise
    if settings.port_file is not None:
        write_port_file(settings.port_file, built.port)
    if settings.embedded:
        reloader = ModelReloader(settings, built, core)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)
    await run_until_signal(built.server, built.health, settings.grace_seconds, cleanups=[core.close])


def _serve_metrics(settings: Settings) -> None:
    """Prometheus /metrics on --metrics-port, when one is set."""
    if settings.metrics_port is None:
        return
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise here
    metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.host)
    logger.info("metrics on http://%s:%d/metrics", settings.host, metrics_server.server_port)


def _has_model(settings: Settings) -> bool:
    assert settings.artifact_dir is not None  # Settings checks it for the in-process backends
    return _newest_model(settings.artifact_dir) is not None


def _newest_model(root: Path) -> Path | None:
    """The version a load under `root` would pick now (the root itself when it is a version), or None."""
    try:
        return resolve_version(root)
    except ArtifactError:
        return None


async def _serve_once_a_model_appears(settings: Settings) -> None:
    assert settings.artifact_dir is not None
    root = settings.artifact_dir
    metrics = RerankerMetrics()
    built = build_server(settings, metrics=metrics)
    refused: dict[Path, str] = {}  # versions that appeared but did not load, and why

    def describe() -> str:
        why = "; ".join(f"{path.name} refused: {error}" for path, error in refused.items())
        return waiting_status(root) + (f"; {why}" if why else "")

    built.servicer.waiting_for(describe)
    await built.server.start()
    _serve_metrics(settings)
    if settings.port_file is not None:
        write_port_file(settings.port_file, built.port)
    logger.info(
        "reranker listening on %s:%d, NOT_SERVING: %s", settings.host, built.port, waiting_status(root)
    )
    cores: list[RerankCore] = []

    async def load_when_ready() -> None:
        # The model is written by another process (the demo's training): only the filesystem can tell.
        while True:
            candidate = _newest_model(root)
            if candidate is not None and candidate not in refused:
                try:
                    core = await asyncio.to_thread(build_core, settings, metrics=metrics)
                    break
                except Exception as exc:  # a broken version is reported, and a newer one is awaited
                    logger.error("model %s did not load: %s", candidate, exc)
                    refused[candidate] = str(exc)[:200]
            await asyncio.sleep(settings.model_poll_seconds)
        cores.append(core)
        await _wait_until_ready(built, core, settings.startup_timeout_seconds)
        reloader = ModelReloader(settings, built, core)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)

    loading = asyncio.create_task(load_when_ready())

    async def close_cores() -> None:
        loading.cancel()
        for core in cores:
            await core.close()

    await run_until_signal(built.server, built.health, settings.grace_seconds, cleanups=[close_cores])


class ModelReloader(SignalReloader):
    """SIGHUP (in-process backends) loads `--artifact-dir` again (a root picks its newest complete version),
    warms the new model beside the served one, checks it is the same model name, and swaps it in. An artifact
    that does not load is logged and the old model keeps serving; the old one is closed after
    `grace_seconds`, once the requests still scoring on it have finished. (With the triton backend a new
    version is Triton's to load; the scorer notices it through its identity refresh.)
    """

    def __init__(self, settings: Settings, built: RerankerServer, core: RerankCore) -> None:
        super().__init__(settings.grace_seconds, "model")
        self._settings = settings
        self._built = built
        self._core = core

    async def reload(self) -> None:
        old = self._core.scorer
        try:
            fresh = await asyncio.to_thread(build_scorer, self._settings, self._built.metrics)
            await fresh.start()  # the onnx scorer's start scores one pair: warm before it serves
            if fresh.model_name != old.model_name:
                await fresh.close()
                raise ValueError(f"new artifact is model {fresh.model_name!r}, not {old.model_name!r}")
        except Exception as exc:  # a bad new version never takes down the served one
            logger.error("model reload refused, still serving %s: %s", old.model_version, exc)
            return
        self._core.swap_scorer(fresh)
        if self._built.metrics is not None:
            self._built.metrics.set_model(fresh.model_name, fresh.model_version, fresh.engine)
        logger.info("swapped in %s %s (was %s)", fresh.model_name, fresh.model_version, old.model_version)
        self.retire(old)


async def _wait_until_ready(built: RerankerServer, core: RerankCore, timeout_seconds: float) -> None:
    """Marks the server ready, retrying while the scorer (Triton, still loading) is Unavailable."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            await built.mark_ready(core)
            return
        except Unavailable as exc:
            if time.monotonic() >= deadline:
                raise
            logger.warning("scorer not ready yet (%s); retrying", exc)
            await asyncio.sleep(1.0)
