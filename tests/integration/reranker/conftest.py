"""Real infrastructure for the reranker tests: cross-encoder artifacts, redis-server and tritonserver.

Artifacts are tests.cross_encoder_support's: v1 and v2 differ in the head's seed, so a version change also
changes the scores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from operations.launch import LocalServiceError
from operations.redis_server import RedisServer
from operations.tritonserver import TritonInstallation, TritonServer
from tests.cross_encoder_support import cross_encoder_artifact, serving_on_triton, triton_installation_or_skip

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def artifact_v1() -> Path:
    return cross_encoder_artifact("v1")


@pytest.fixture(scope="session")
def artifact_v2() -> Path:
    return cross_encoder_artifact("v2")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except LocalServiceError as exc:
        pytest.fail(f"{exc} (.ci/run installs it)")
    with server:
        logger.info("redis-server started in %.2fs", server.startup_seconds)
        yield server


@pytest.fixture(scope="session")
def triton_installation() -> TritonInstallation:
    return triton_installation_or_skip()


@pytest.fixture(scope="session")
def triton_server(
    triton_installation: TritonInstallation, artifact_v1: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    # The fp32 ONNX graph, which the tests compare with the in-process scorer to 1e-4.
    with serving_on_triton(triton_installation, artifact_v1, tmp_path_factory.mktemp("triton")) as server:
        logger.info("tritonserver ready in %.1fs", server.startup_seconds)
        yield server
