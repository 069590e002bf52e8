"""Shared gRPC plumbing: standard health and reflection services, channel options, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def message_size_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options bounding message sizes in both directions, for servers and channels alike."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


class _Undecodable:
    """Stands in for a request whose bytes did not parse; the wrapped handler answers INVALID_ARGUMENT."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _safe_deserializer(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, truncated varints...
            return _Undecodable(type(exc).__name__)

    return decode


def _reject_undecodable(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "request is not a valid protobuf message (malformed bytes or invalid UTF-8 in a string)",
            )
        return await behavior(request, context)

    return handle


class RejectUndecodableRequests(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers INVALID_ARGUMENT, not UNKNOWN, to a unary request that fails to parse.

    grpc's asyncio server turns a request deserializer exception into UNKNOWN ("Unexpected DecodeError"),
    which would blame the server for the caller's bytes. This wraps each unary-unary handler's deserializer
    so a parse failure reaches the handler as a marker, and the handler aborts with INVALID_ARGUMENT.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _reject_undecodable(handler.unary_unary),
            request_deserializer=_safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def new_server(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Server:
    """An asyncio server with bounded message sizes that rejects unparseable requests as INVALID_ARGUMENT."""
    return grpc.aio.server(
        options=message_size_options(max_message_bytes), interceptors=[RejectUndecodableRequests()]
    )


def add_standard_services(
    server: grpc.aio.Server, service_names: Sequence[str], enable_reflection: bool
) -> health.aio.HealthServicer:
    """Registers grpc.health.v1 (NOT_SERVING until `set_serving`) and, optionally, reflection."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if enable_reflection:
        names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    return health_servicer


async def set_serving(
    health_servicer: health.aio.HealthServicer, service_names: Iterable[str], serving: bool
) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *service_names):
        await health_servicer.set(name, status)


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    """Binds an address such as '127.0.0.1:0' and returns the port actually bound."""
    port: int = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise OSError(f"could not bind gRPC address {address}")
    return port


async def run_until_signal(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    grace_seconds: float,
    cleanups: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Serves until SIGTERM or SIGINT, then drains: NOT_SERVING, stop with grace, cleanups in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down: draining for up to %.1fs", grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)
    for cleanup in cleanups:
        try:
            await cleanup()
        except Exception:
            logger.exception("cleanup failed during shutdown")
