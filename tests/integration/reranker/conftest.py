"""Real infrastructure for the reranker tests: cross-encoder artifacts, redis-server and tritonserver.

Artifacts come from the training engineer's exporter (`training.cross_encoder.export --untrained`: the
packaged MiniLM body, one layer kept, a seeded fresh head, fp32 so that Triton and in-process scores agree
to float precision whatever the batch composition). They are built once under var/test-artifacts/ and reused
by later sessions. v1 and v2 differ in the head's seed, so a version change also changes the scores.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from search_common.artifacts import ArtifactError
from search_common.cross_encoder_runtime import read_cross_encoder_manifest
from search_common.local_services import (
    LocalServiceError,
    RedisServer,
    TritonInstallation,
    TritonServer,
    assemble_model_repository,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
ARTIFACT_ROOT = REPO_ROOT / "var" / "test-artifacts" / "reranker-cross-encoder"
MAX_LENGTH = 128
VERSIONS = {"v1": 13, "v2": 7}  # version -> head seed


def _export(version: str, seed: int) -> Path:
    target = ARTIFACT_ROOT / version
    with contextlib.suppress(ArtifactError):
        read_cross_encoder_manifest(target)
        return target
    from training.cross_encoder.export import main as export_main

    export_main(
        [
            "--untrained",
            "--out",
            str(ARTIFACT_ROOT),
            "--version",
            version,
            "--layers",
            "1",
            "--seed",
            str(seed),
            "--max-length",
            str(MAX_LENGTH),
            "--no-quantize",
        ]
    )
    return target


@pytest.fixture(scope="session")
def artifact_v1() -> Path:
    return _export("v1", VERSIONS["v1"])


@pytest.fixture(scope="session")
def artifact_v2() -> Path:
    return _export("v2", VERSIONS["v2"])


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
    try:
        installation = TritonInstallation.find()
    except LocalServiceError as exc:
        pytest.skip(f"tritonserver not installed here: {exc}")
    reason = installation.cannot_run()
    if reason is not None:
        pytest.skip(f"tritonserver cannot start on this machine: {reason}")
    return installation


@pytest.fixture(scope="session")
def triton_server(
    triton_installation: TritonInstallation, artifact_v1: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    work = tmp_path_factory.mktemp("triton")
    repository = assemble_model_repository(
        work / "model_repository",
        artifact_root=artifact_v1.parent,
        artifact_version=artifact_v1.name,
        intra_op_threads=1,
    )
    with TritonServer(repository, installation=triton_installation, work_dir=work / "run") as server:
        logger.info("tritonserver ready in %.1fs", server.startup_seconds)
        yield server
