# syntax=docker/dockerfile:1
# search-reranker (the `search-reranker` console script). Build from the repository root:
#   docker build -f deploy/docker/reranker.Dockerfile -t REGISTRY/neural-search/reranker:TAG .
# Stage 1 installs the project and its pinned dependencies into /opt/venv; stage 2 is the same slim Python with
# only that venv, run as an unprivileged user. Base images are pinned to an exact release; pin the digest too
# (image@sha256:...) when you mirror them into your registry.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# torch from the CPU wheel index: the default index's build pulls gigabytes of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
WORKDIR /src
# Every package pyproject.toml lists (the generated API package lives under protos/gen).
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
RUN pip install .

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 search \
 && useradd --system --uid 10001 --gid search --home-dir /nonexistent --no-create-home search
COPY --from=build /opt/venv /opt/venv
# The root filesystem is read-only in the pods; caches go to the /tmp volume.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp XDG_CACHE_HOME=/tmp/.cache
USER 10001:10001
EXPOSE 50053 9102
ENTRYPOINT ["search-reranker"]
