"""Triton scorer: the cross-encoder served by tritonserver (`triton_models/cross_encoder`), over gRPC aio.

At start it reads the model config once: `max_batch_size` (pairs per request) and the artifact's name,
version and max_length (the model refuses to load an artifact that disagrees with them, so they are the
served model's identity and safe to key the score cache by). A score call sorts the documents by length, so
each chunk holds documents of similar size, sends the chunks concurrently (Triton's dynamic batcher merges
them with other callers' requests), and restores input order. Every call carries a timeout; Triton errors
become the domain errors in search_common.errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from model_runtimes.cross_encoder.pairs import batch_slices, length_order
from reranker_service.backends.admission import AdmissionLimit
from search_common import triton_contract as tc
from search_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    SearchError,
    Unavailable,
)
from search_common.tls import ClientTls, tritonclient_options

logger = logging.getLogger(__name__)

COMPONENT = "triton"
# tritonclient's own defaults plus a short reconnect backoff: grpc's default (1 s growing to 120 s) could
# leave the reranker failing for up to two minutes after a restarted tritonserver is back.
CHANNEL_ARGS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 2**31 - 1),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def to_domain_error(exc: InferenceServerException) -> SearchError:
    """Maps a Triton client error to the domain error the servicer turns into a gRPC status."""
    status = str(exc.status() or "")
    message = str(exc.message() or "")
    lowered = message.lower()
    if "DEADLINE_EXCEEDED" in status or "deadline" in lowered:
        return DeadlineExceeded(f"{COMPONENT}: deadline exceeded")
    if "exceeds maximum queue size" in lowered or "RESOURCE_EXHAUSTED" in status:
        return ResourceExhausted(f"{COMPONENT}: queue full, retry later")
    if "timeout expired" in lowered:
        return DeadlineExceeded(f"{COMPONENT}: request timed out in the queue")
    if "INVALID_ARGUMENT" in status:
        return InvalidArgument(f"{COMPONENT}: {message}")
    return Unavailable(f"{COMPONENT}: {status.rsplit('.', 1)[-1].lower() or 'error'}")


# The engine label of a model whose config has no ENGINE output (a repository assembled before it existed).
ENGINE_UNKNOWN = "triton"


class TritonScorer:
    """`Scorer` over a Triton-served cross-encoder.

    Args:
        url: Triton's gRPC address, `host:port`.
        model: the Triton model name.
        timeout_seconds: client-side timeout of every call.
        identity_ttl_seconds: how often `start` re-reads the model config, so that a Triton restarted on a
            new artifact version is noticed (and cache keys change) within this many seconds.
        max_pending: requests admitted (sent or waiting) before ResourceExhausted; Triton's own queue is
            unbounded (see triton_models/cross_encoder/config.pbtxt), so this is where overload is shed.
    """

    def __init__(
        self,
        url: str,
        model: str = tc.MODEL_NAME,
        *,
        timeout_seconds: float = 10.0,
        identity_ttl_seconds: float = 30.0,
        tls: ClientTls | None = None,
        max_pending: int = 64,
    ) -> None:
        self._admission = AdmissionLimit(max_pending)
        self._url = url
        self._tls = tls
        self._model = model
        self._timeout = timeout_seconds
        self._client: triton_aio.InferenceServerClient | None = None
        self._max_batch_size = 0
        self._name = ""
        self._version = ""
        self._engine = ENGINE_UNKNOWN
        self._max_length = 0
        self._identity_ttl = identity_ttl_seconds
        self._identity_read_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def engine(self) -> str:
        """What the model scores with, as its identity last said: "triton-torch", "triton-onnx-cuda"."""
        return self._engine

    @property
    def model_version(self) -> str:
        return self._version

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    async def start(self) -> None:
        """Connects and reads the model config, again once it is older than the identity TTL.

        Raises:
            Unavailable: the first time, when the model is not ready or its config lacks the artifact.
        """
        if self._client is not None and time.monotonic() - self._identity_read_at < self._identity_ttl:
            return
        async with self._lock:
            if self._client is None:
                self._client = await self._connect()
            elif time.monotonic() - self._identity_read_at >= self._identity_ttl:
                try:
                    await self._read_identity(self._client)
                except SearchError as exc:
                    # Keep serving with the identity we have; the next request tries again.
                    logger.warning("triton scorer: could not refresh the model identity (%s)", exc)
                    self._identity_read_at = time.monotonic()

    async def _connect(self) -> triton_aio.InferenceServerClient:
        client = triton_aio.InferenceServerClient(
            self._url, channel_args=CHANNEL_ARGS, **tritonclient_options(self._tls)
        )
        try:
            await self._read_identity(client)
        except BaseException:
            await client.close()
            raise
        return client

    async def _read_identity(self, client: triton_aio.InferenceServerClient) -> None:
        try:
            if not await client.is_model_ready(self._model, client_timeout=self._timeout):
                raise Unavailable(f"{COMPONENT}: model {self._model} is not ready")
            response: Any = await client.get_model_config(
                self._model, as_json=True, client_timeout=self._timeout
            )
        except InferenceServerException as exc:
            raise to_domain_error(exc) from None
        config = response["config"]
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        max_batch_size = int(config.get("max_batch_size", 0))
        name = params.get(tc.PARAM_ARTIFACT_NAME, "")
        version = params.get(tc.PARAM_ARTIFACT_VERSION, "")
        max_length = params.get(tc.PARAM_ARTIFACT_MAX_LENGTH, "")
        if max_batch_size <= 0 or not name or not version or not max_length.isdigit():
            raise Unavailable(
                f"{COMPONENT}: model {self._model} config lacks max_batch_size or the artifact's "
                f"{tc.PARAM_ARTIFACT_NAME}/{tc.PARAM_ARTIFACT_VERSION}/{tc.PARAM_ARTIFACT_MAX_LENGTH}"
            )
        outputs = {output.get("name") for output in config.get("output", [])}
        engine = ENGINE_UNKNOWN
        if tc.OUTPUT_ENGINE in outputs:
            engine = f"triton-{await read_engine(client, self._model, timeout=self._timeout)}"
        changed = (name, version, engine) != (self._name, self._version, self._engine)
        self._max_batch_size = max_batch_size
        self._name, self._version, self._max_length = name, version, int(max_length)
        self._engine = engine
        self._identity_read_at = time.monotonic()
        if not changed:
            return
        logger.info(
            "triton scorer: %s at %s serves %s %s on %s (max batch %d pairs)",
            self._model,
            self._url,
            name,
            version,
            engine,
            max_batch_size,
        )

    async def score(
        self, query: str, texts: Sequence[str], max_length: int | None = None
    ) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        if self._client is None:
            raise Unavailable(f"{COMPONENT}: scorer not started")
        order, inverse = length_order([len(text) for text in texts])
        chunks = [[texts[i] for i in order[part]] for part in batch_slices(len(texts), self._max_batch_size)]
        with self._admission.admit():
            parts = await asyncio.gather(
                *(self._infer(self._client, query, chunk, max_length) for chunk in chunks)
            )
        return np.concatenate(parts).astype(np.float32, copy=False)[inverse]

    async def _infer(
        self,
        client: triton_aio.InferenceServerClient,
        query: str,
        texts: Sequence[str],
        max_length: int | None,
    ) -> npt.NDArray[np.float32]:
        return await infer_pairs(
            client, self._model, [query] * len(texts), texts, max_length=max_length, timeout=self._timeout
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def pair_inputs(queries: Sequence[str], texts: Sequence[str]) -> list[triton_aio.InferInput]:
    """The model's QUERY and DOCUMENT inputs for (queries[i], texts[i]) pairs: BYTES [pairs, 1] each."""
    inputs = []
    for name, values in ((tc.INPUT_QUERY, queries), (tc.INPUT_DOCUMENT, texts)):
        tensor = triton_aio.InferInput(name, [len(values), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_).reshape(-1, 1))
        inputs.append(tensor)
    return inputs


async def read_engine(client: triton_aio.InferenceServerClient, model: str, *, timeout: float) -> str:
    """What the served model scores with: its ENGINE output for a one-pair probe, e.g. "torch"."""
    try:
        result = await client.infer(
            model,
            pair_inputs(["engine probe"], ["engine probe"]),
            outputs=[triton_aio.InferRequestedOutput(tc.OUTPUT_ENGINE)],
            client_timeout=timeout,
        )
    except InferenceServerException as exc:
        raise to_domain_error(exc) from None
    engine = result.as_numpy(tc.OUTPUT_ENGINE)
    if engine is None or engine.size != 1:
        raise Unavailable(f"{COMPONENT}: model {model} did not say what it scores with")
    value = engine.reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


async def infer_pairs(
    client: triton_aio.InferenceServerClient,
    model: str,
    queries: Sequence[str],
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    timeout: float = 10.0,
) -> npt.NDArray[np.float32]:
    """One Triton request scoring (queries[i], texts[i]) pairs; errors become domain errors."""
    try:
        result = await client.infer(
            model,
            pair_inputs(queries, texts),
            outputs=[triton_aio.InferRequestedOutput(tc.OUTPUT_SCORE)],
            client_timeout=timeout,
            parameters={tc.REQUEST_PARAM_MAX_LENGTH: max_length} if max_length else None,
        )
    except InferenceServerException as exc:
        raise to_domain_error(exc) from None
    scores = result.as_numpy(tc.OUTPUT_SCORE)
    if scores is None or scores.size != len(texts):
        raise Unavailable(
            f"{COMPONENT}: model returned {0 if scores is None else scores.size} scores "
            f"for {len(texts)} pairs"
        )
    return np.asarray(scores, dtype=np.float32).reshape(-1)
