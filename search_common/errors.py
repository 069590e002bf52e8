"""Domain exceptions shared by all services, and their one mapping to gRPC status codes."""

from __future__ import annotations

import logging

import grpc

logger = logging.getLogger(__name__)


class SearchError(Exception):
    """Base of the errors a caller can act on; the message is safe to return to clients."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(SearchError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SearchError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(SearchError):
    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(SearchError):
    """Not servable as sent, but servable as changed (a query embedding made by another encoder)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SearchError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(SearchError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Maps an exception to (code, client-safe message); unexpected ones become INTERNAL, logged once."""
    if isinstance(exc, SearchError):
        return exc.code, str(exc)
    logger.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


async def abort_with(context: grpc.aio.ServicerContext[object, object], exc: BaseException) -> None:
    """Aborts the RPC with the status that `status_for` gives; never returns."""
    code, message = status_for(exc)
    await context.abort(code, message)


def from_rpc_error(error: grpc.aio.AioRpcError, component: str) -> SearchError:
    """Turns a downstream failure into a domain error, keeping the caller-actionable codes."""
    code = error.code()
    detail = f"{component}: {code.name.lower()}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"{component}: {error.details()}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{component}: {error.details()}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"{component}: {error.details()}")
    return Unavailable(detail)
