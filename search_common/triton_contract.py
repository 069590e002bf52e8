"""Names shared by the Triton cross-encoder model and its client: one place, so they cannot drift.

`triton_models/cross_encoder/config.pbtxt` repeats these names (Triton reads them there); the unit test
`tests/unit/reranker/test_triton_contract.py` checks that the two agree.
"""

from __future__ import annotations

MODEL_NAME = "cross_encoder"

# One (query, document) pair per batch row: TYPE_STRING dims [1] with a batch dimension in front.
INPUT_QUERY = "QUERY"
INPUT_DOCUMENT = "DOCUMENT"
# One float32 score per pair: TYPE_FP32 dims [1].
OUTPUT_SCORE = "SCORE"
# What scored the pairs, e.g. "torch" or "onnx-cuda" (CrossEncoderRuntime.engine_on_device), one per pair:
# TYPE_STRING dims [1], produced only when a request asks for it. Engines and devices round scores
# differently, so the client makes it part of its score-cache keys; "auto" in the config cannot say which.
OUTPUT_ENGINE = "ENGINE"

# Request parameter (Triton inference request parameters): tokens per pair; absent or 0 = model default.
REQUEST_PARAM_MAX_LENGTH = "max_length"

# Model config parameters naming the artifact the model serves.
PARAM_ARTIFACT_ROOT = "ARTIFACT_ROOT"
PARAM_ARTIFACT_VERSION = "ARTIFACT_VERSION"
# The manifest name the model must load; the model refuses to load a different one, so clients can trust
# ARTIFACT_NAME/ARTIFACT_VERSION from the model config as the served model's identity (cache keys use it).
PARAM_ARTIFACT_NAME = "ARTIFACT_NAME"
# Tokens per pair the artifact was built for (its manifest max_length); the model checks it at load.
PARAM_ARTIFACT_MAX_LENGTH = "ARTIFACT_MAX_LENGTH"
PARAM_INTRA_OP_THREADS = "INTRA_OP_THREADS"
# Which of the artifact's models the instances run: auto | onnx | torch (cross_encoder_runtime.choose_engine).
PARAM_ENGINE = "ENGINE"
# Rows per bucketed forward pass inside the model, whatever the dynamic batcher gathered.
PARAM_SCORE_BATCH_SIZE = "SCORE_BATCH_SIZE"
# Where the engine runs: empty follows the instance kind (KIND_GPU: the instance's GPU), or "cuda"/"cuda:N".
PARAM_DEVICE = "DEVICE"
# How pairs are grouped into forward passes (model_runtimes.cross_encoder.passes): auto, single or bucketed.
PARAM_PASS_SHAPE = "PASS_SHAPE"
PARAM_EXECUTION_ENV_PATH = "EXECUTION_ENV_PATH"
# Placeholder the committed config carries; deploy/local assembles a repository with the real values.
ARTIFACT_PLACEHOLDER = "__ARTIFACT_ROOT__"
VERSION_PLACEHOLDER = "__ARTIFACT_VERSION__"
NAME_PLACEHOLDER = "__ARTIFACT_NAME__"
MAX_LENGTH_PLACEHOLDER = "__ARTIFACT_MAX_LENGTH__"
