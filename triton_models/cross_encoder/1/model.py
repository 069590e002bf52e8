"""Triton python backend: the cross-encoder reranker (tokenisation, then ONNX Runtime or the artifact's
bfloat16 torch program, on the CPU or on the instance's GPU; the ENGINE parameter chooses).

Thin on purpose: decoding, grouping, scoring and splitting live in model_runtimes.cross_encoder (no
pb_utils there, so they are unit-tested without Triton). `initialize` loads the artifact named by the config's
ARTIFACT_ROOT/ARTIFACT_VERSION once; `execute` concatenates every request's pairs, scores them in one call
per max_length and returns one response per request, in order. The runtime's pass shape (PASS_SHAPE) keeps
each pair's score independent of the requests the dynamic batcher put beside it. A malformed request gets an
error response; the rest of the batch is still answered.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from model_runtimes.cross_encoder.pairs import PairRequest, decode_pair_request, score_requests
from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from search_common import triton_contract as tc

logger = logging.getLogger(__name__)


def _parameter(config: dict[str, Any], key: str, default: str | None = None) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", default)
    if value is None:
        raise pb_utils.TritonModelException(f"model config lacks parameter {key}")
    return str(value)


def _max_length(request: Any) -> int | None:
    raw = request.parameters()
    params = json.loads(raw) if raw else {}
    value = params.get(tc.REQUEST_PARAM_MAX_LENGTH)
    if value is None or value == 0:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 8:
        raise ValueError(f"request parameter {tc.REQUEST_PARAM_MAX_LENGTH} must be an integer >= 8 or 0")
    return value


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        if int(np.__version__.split(".", 1)[0]) >= 2:
            # Seen with Triton 2.51 on a GPU host: the stub, built against numpy 1.x, decoded every BYTES
            # input as its first byte repeated and died on the first request, long after the model was READY.
            logger.warning(
                "numpy %s in the model's environment: a python backend stub built against numpy 1.x garbles "
                "string inputs under numpy 2 and dies on the first request; install numpy<2 "
                "(triton_models/requirements.txt)",
                np.__version__,
            )
        config = json.loads(args["model_config"])
        root = _parameter(config, tc.PARAM_ARTIFACT_ROOT)
        version = _parameter(config, tc.PARAM_ARTIFACT_VERSION)
        expected_name = _parameter(config, tc.PARAM_ARTIFACT_NAME, "")
        if tc.ARTIFACT_PLACEHOLDER in root or tc.VERSION_PLACEHOLDER in version:
            raise pb_utils.TritonModelException(
                "ARTIFACT_ROOT/ARTIFACT_VERSION are placeholders: serve the repository assembled by "
                "deploy/local (operations.triton_repository.assemble_model_repository)"
            )
        threads = int(_parameter(config, tc.PARAM_INTRA_OP_THREADS, "0"))
        requested = _parameter(config, tc.PARAM_ENGINE, "onnx")
        device = _parameter(config, tc.PARAM_DEVICE, "")
        if not device:
            on_gpu = args.get("model_instance_kind") == "GPU"
            device = f"cuda:{args.get('model_instance_device_id', '0')}" if on_gpu else "cpu"
        pass_shape = _parameter(config, tc.PARAM_PASS_SHAPE, "auto")
        try:  # load decides what auto means on this device, and refuses an unknown name
            self._runtime = CrossEncoderRuntime.load(
                Path(root) / version,
                engine=requested,
                device=device,
                intra_op_threads=threads,
                pass_shape=pass_shape,
            )
        except Exception as exc:
            raise pb_utils.TritonModelException(f"cannot load cross-encoder artifact: {exc}") from exc
        if self._runtime.version != version:
            raise pb_utils.TritonModelException(
                f"artifact {root}/{version} says its version is {self._runtime.version}"
            )
        if expected_name and tc.NAME_PLACEHOLDER not in expected_name and self._runtime.name != expected_name:
            raise pb_utils.TritonModelException(
                f"artifact {root}/{version} is {self._runtime.name}, config expects {expected_name}"
            )
        expected_max_length = _parameter(config, tc.PARAM_ARTIFACT_MAX_LENGTH, "")
        if expected_max_length.isdigit() and int(expected_max_length) != self._runtime.max_length:
            raise pb_utils.TritonModelException(
                f"artifact max_length is {self._runtime.max_length}, config says {expected_max_length}"
            )
        # Rows per bucketed pass (single passes have one row).
        score_batch = _parameter(config, tc.PARAM_SCORE_BATCH_SIZE, "16")
        if not score_batch.isdigit() or int(score_batch) < 1:
            raise pb_utils.TritonModelException(f"{tc.PARAM_SCORE_BATCH_SIZE} must be a positive integer")
        self._batch_size = int(score_batch)
        output = pb_utils.get_output_config_by_name(config, tc.OUTPUT_SCORE)
        self._score_dtype = pb_utils.triton_string_to_numpy(output["data_type"])
        logger.info(
            "cross_encoder ready: %s %s on %s, %s passes",
            self._runtime.name,
            version,
            self._runtime.description,
            self._runtime.pass_shape,
        )

    def _score_pairs(self, queries: Any, texts: Any, max_length: int | None) -> Any:
        return self._runtime.score_pairs(queries, texts, max_length=max_length, batch_size=self._batch_size)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        decoded: list[PairRequest] = []
        positions: list[int] = []
        for index, request in enumerate(requests):
            try:
                query = pb_utils.get_input_tensor_by_name(request, tc.INPUT_QUERY)
                document = pb_utils.get_input_tensor_by_name(request, tc.INPUT_DOCUMENT)
                decoded.append(
                    decode_pair_request(
                        None if query is None else query.as_numpy(),
                        None if document is None else document.as_numpy(),
                        _max_length(request),
                    )
                )
                positions.append(index)
            except ValueError as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                )
        if decoded:
            try:
                scored = score_requests(self._score_pairs, decoded)
            except Exception as exc:
                logger.exception("cross_encoder scoring failed")
                message = f"scoring failed: {type(exc).__name__}"
                for index in positions:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
            else:
                for index, scores in zip(positions, scored, strict=True):
                    responses[index] = self._response(requests[index], scores)
        return responses

    def _response(self, request: Any, scores: Any) -> Any:
        """SCORE, and ENGINE when the request asks for it (clients key their score caches by it)."""
        tensors = [pb_utils.Tensor(tc.OUTPUT_SCORE, scores.reshape(-1, 1).astype(self._score_dtype))]
        if tc.OUTPUT_ENGINE in request.requested_output_names():
            engine = np.full((scores.size, 1), self._runtime.engine_on_device.encode(), dtype=object)
            tensors.append(pb_utils.Tensor(tc.OUTPUT_ENGINE, engine))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        logger.info("cross_encoder instance finalised")
