"""Faults under load: kill -9 each component mid-run, restart it on its old port, and lose no request.

The stack is gateway.fault_drill's (two dense shards, one BM25 shard, the reranker on a real tritonserver
with a real redis-server cache, the gateway), all separate processes; the gateway is never restarted.
A reduced run (300 requests per fault from 16 concurrent clients); bench/faults.py runs the full size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.fault_drill import FAULTS, DrillStack, Fault, run_fault
from retriever_service.build_index import build_index
from retriever_service.encoder import BiEncoder
from search_common.artifacts import ArtifactError
from search_common.cross_encoder_runtime import read_cross_encoder_manifest
from search_common.local_services import LocalServiceError, TritonInstallation

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
ARTIFACT_ROOT = REPO / "var" / "test-artifacts" / "reranker-cross-encoder"


def _artifact() -> Path:
    """The reranker tests' v1 artifact (packaged MiniLM body, one layer, seeded head), exported if absent."""
    target = ARTIFACT_ROOT / "v1"
    with contextlib.suppress(ArtifactError):
        read_cross_encoder_manifest(target)
        return target
    from training.cross_encoder.export import main as export_main

    export_main(
        ["--untrained", "--out", str(ARTIFACT_ROOT), "--version", "v1", "--layers", "1", "--seed", "13",
         "--max-length", "128", "--no-quantize"]
    )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def drill_stack(
    indexes: dict[str, Path], encoder: BiEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DrillStack]:
    try:
        installation = TritonInstallation.find()
    except LocalServiceError as exc:
        pytest.skip(f"tritonserver not installed here: {exc}")
    reason = installation.cannot_run()
    if reason is not None:
        pytest.skip(f"tritonserver cannot start on this machine: {reason}")
    root = tmp_path_factory.mktemp("fault-drills")
    corpus = indexes["bm25-1"] / "shard-0" / "docs.jsonl"
    dense = build_index(corpus, root / "dense-2", kind="dense", num_shards=2, encoder=encoder)
    with DrillStack(root / "run", dense, indexes["bm25-1"], _artifact()) as stack:
        yield stack


@pytest.mark.parametrize("fault", FAULTS)
async def test_no_request_fails_while_a_component_dies_and_comes_back(
    drill_stack: DrillStack, fault: Fault
) -> None:
    report = await run_fault(drill_stack, fault, requests=300, down_seconds=2.0, settle_seconds=2.0)
    assert report.failed == 0, report
    assert report.codes == {"OK": report.requests}
    assert report.requests >= 300
    if fault == "redis":
        assert report.degraded == 0, "a Redis outage is bypassed by the reranker, not a degraded answer"
    else:
        assert report.degraded > 0, "the outage was not seen: the fault did not land mid-run"
    assert report.recovery_s is not None
