"""Hostile input against a real gateway process over a real BM25 retriever process.

Hypothesis sends odd unicode, huge and negative numbers and random bytes; hand-built wire messages put
invalid UTF-8 where a string is expected; an oversized message goes past the receive limit. Every answer
must be OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED (never INTERNAL or UNKNOWN), and both processes must
still be running at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search.v1 import search_service_pb2, search_service_pb2_grpc

from operations.processes import ServiceProcess, ServiceStack
from search_common.grpc_server import DEFAULT_MAX_MESSAGE_BYTES

pytestmark = pytest.mark.slow

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
SEARCH_METHOD = "/search.v1.SearchService/Search"
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
# Odd unicode: controls, NUL, combining marks, bidi overrides, zero-width joiners, astral planes, plus
# plain words so some requests get as far as the retriever. Surrogates cannot be encoded, so none.
ODD_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=300),
    st.text(alphabet="\x00\u0301\u202e\u200d\ufeff\U0001f600\U000e0001 gzip archive", max_size=60),
    st.builds(lambda n: "a" * n, st.integers(min_value=2040, max_value=2100)),
)
CALL_OPTIONS = [("grpc.max_send_message_length", 4 * DEFAULT_MAX_MESSAGE_BYTES)]


@pytest.fixture(scope="module")
def gateway(indexes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    run = tmp_path_factory.mktemp("hostile-run")
    shard = indexes["bm25-1"] / "shard-0"
    with ServiceStack(run) as stack:
        retriever = stack.start(
            "bm25-0", [sys.executable, "-m", "retriever_service", "--index", str(shard), "--threads", "1"]
        )
        gateway = stack.start("gateway", [sys.executable, "-m", "gateway", "--bm25", retriever.address])
        yield gateway
        assert retriever.running, "the retriever died under hostile input"
        assert gateway.running, "the gateway died under hostile input"


@pytest.fixture(scope="module")
def channel(gateway: ServiceProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.address, options=CALL_OPTIONS) as channel:
        yield channel


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        assert code in ALLOWED, f"{code}: {exc.details()}"
        return code
    return grpc.StatusCode.OK


def _length_delimited(field: int, payload: bytes) -> bytes:
    """Protobuf wire format: tag (field << 3 | 2), varint length, payload."""
    out = bytearray([field << 3 | 2])
    n = len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=ODD_TEXT,
    top_k=st.one_of(INT32, st.integers(min_value=-3, max_value=120)),
    variant=st.one_of(st.just(""), st.just("bm25"), st.text(max_size=40)),
    caller_key=st.text(max_size=600),
    retrieval_depth=st.one_of(st.none(), INT32),
    rerank_depth=st.one_of(st.none(), INT32, st.just(0)),
)
def test_fuzzed_requests_get_ok_or_a_client_error(
    channel: grpc.Channel,
    query: str,
    top_k: int,
    variant: str,
    caller_key: str,
    retrieval_depth: int | None,
    rerank_depth: int | None,
) -> None:
    stub = search_service_pb2_grpc.SearchServiceStub(channel)
    overrides = search_service_pb2.SearchOverrides(retrieval_depth=retrieval_depth, rerank_depth=rerank_depth)
    request = search_service_pb2.SearchRequest(
        query=query, top_k=top_k, variant=variant, caller_key=caller_key, overrides=overrides
    )
    _code(lambda: stub.Search(request, timeout=30))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_random_wire_bytes_get_ok_or_a_client_error(channel: grpc.Channel, raw: bytes) -> None:
    call = channel.unary_unary(SEARCH_METHOD)  # no serializers: the bytes go out as they are
    _code(lambda: call(raw, timeout=30))


@pytest.mark.parametrize("field", [1, 3, 4], ids=["query", "variant", "caller_key"])
def test_invalid_utf8_in_a_string_field_is_invalid_argument(channel: grpc.Channel, field: int) -> None:
    top_k = bytes([2 << 3 | 0, 5])  # field 2 (top_k) = 5, varint
    raw = _length_delimited(1, b"gzip") + top_k if field != 1 else top_k
    raw += _length_delimited(field, b"gzip \xff\xfe \xc3\x28 archive")
    call = channel.unary_unary(SEARCH_METHOD)
    with pytest.raises(grpc.RpcError) as info:
        call(raw, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in info.value.details()


def test_huge_varints_are_truncated_to_int32_and_refused(channel: grpc.Channel) -> None:
    # top_k as a 10-byte varint of 2**64 - 1: protobuf reads it as int32 -1, which is out of bounds.
    raw = _length_delimited(1, b"gzip") + bytes([2 << 3 | 0]) + b"\xff" * 9 + b"\x01"
    call = channel.unary_unary(SEARCH_METHOD)
    with pytest.raises(grpc.RpcError) as info:
        call(raw, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_k" in info.value.details()


def test_an_oversized_message_is_resource_exhausted(channel: grpc.Channel) -> None:
    stub = search_service_pb2_grpc.SearchServiceStub(channel)
    huge = "a" * (DEFAULT_MAX_MESSAGE_BYTES + 1024)
    with pytest.raises(grpc.RpcError) as info:
        stub.Search(search_service_pb2.SearchRequest(query=huge, top_k=1), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_gateway_still_answers_after_the_fuzzing(channel: grpc.Channel) -> None:
    stub = search_service_pb2_grpc.SearchServiceStub(channel)
    response = stub.Search(search_service_pb2.SearchRequest(query="gzip archive", top_k=3), timeout=30)
    assert len(response.hits) == 3


@pytest.mark.parametrize("timeout", [0.0005, 0.005, 0.05])
def test_a_tiny_deadline_is_deadline_exceeded_or_an_answer(channel: grpc.Channel, timeout: float) -> None:
    stub = search_service_pb2_grpc.SearchServiceStub(channel)
    request = search_service_pb2.SearchRequest(query="gzip archive", top_k=3)
    try:
        response = stub.Search(request, timeout=timeout)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc.details()
    else:
        assert response.hits or response.metadata.coverage.degraded
