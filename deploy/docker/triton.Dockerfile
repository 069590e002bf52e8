# syntax=docker/dockerfile:1
# tritonserver for the cross-encoder: the official Triton image plus what the python backend's model imports.
# Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile -t REGISTRY/neural-search/triton:TAG .
# Stage 1 builds this repository's wheel; stage 2 adds ONNX Runtime (the GPU build, which also runs on CPU),
# tokenizers, PyTorch's CPU build (the ENGINE torch|auto path: the artifact's bfloat16 program on CPU
# instances) and that wheel (--no-deps: the model imports only model_runtimes and search_common) to the official image,
# and keeps triton_models/ at /opt/search/triton_models for the pod's assemble-repository step
# (operations.triton_repository). The model repository and the artifact come from volumes at run time.
# Base images are pinned to an exact release; pin the digest too when you mirror them.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos/gen protos/gen
COPY search_common search_common
COPY model_runtimes model_runtimes
COPY retriever_service retriever_service
COPY reranker_service reranker_service
COPY gateway gateway
COPY corpora corpora
COPY evaluation evaluation
COPY operations operations
COPY training training
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${TRITON_IMAGE}
# The same pins as triton_models/requirements.txt (onnxruntime-gpu for onnxruntime).
ARG ONNXRUNTIME=onnxruntime-gpu==1.32.0
ARG TOKENIZERS=tokenizers==0.23.3
ARG TORCH=torch==2.13.0
# The python backend's stub is built against numpy 1.x: under numpy 2 its string inputs arrive garbled.
ARG NUMPY=numpy<2
# torch from the CPU wheel index: the default index's build pulls gigabytes of CUDA libraries. The GPU image
# (neural-search/triton-gpu, overlays/gpu) is built with --build-arg
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126: ENGINE auto then runs the bfloat16 program on the
# GPU (with the CPU build it would run ONNX Runtime's CUDA provider there).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
RUN python3 -m pip install "$ONNXRUNTIME" "$TOKENIZERS" "$NUMPY"
RUN python3 -m pip install --index-url "$TORCH_INDEX_URL" "$TORCH"
COPY --from=build /wheels /wheels
# The image's Python is newer than pyproject's requires-python range; search_common's runtime runs on it.
RUN python3 -m pip install --no-deps --ignore-requires-python /wheels/*.whl && rm -rf /wheels
COPY triton_models /opt/search/triton_models
# triton-server: the official image's unprivileged user.
USER 1000:1000
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models/repository"]
