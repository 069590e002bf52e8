"""Faults under load: kill -9 each component mid-run, restart it on its old port, and lose no request.

The stack is operations.fault_drill's (two dense shards, one BM25 shard, the reranker on a real tritonserver
with a real redis-server cache, the gateway), all separate processes; the gateway is never restarted.
A reduced run (300 requests per fault from 16 concurrent clients); bench/faults.py runs the full size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model_runtimes.bi_encoder import BiEncoder
from operations.fault_drill import FAULTS, DrillStack, Fault, run_fault
from retriever_service.build_index import build_index
from tests.cross_encoder_support import cross_encoder_artifact, triton_installation_or_skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drill_stack(
    indexes: dict[str, Path], encoder: BiEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DrillStack]:
    triton_installation_or_skip()  # the drill starts its own tritonserver
    root = tmp_path_factory.mktemp("fault-drills")
    corpus = indexes["bm25-1"] / "shard-0" / "docs.jsonl"
    dense = build_index(corpus, root / "dense-2", kind="dense", num_shards=2, encoder=encoder)
    with DrillStack(root / "run", dense, indexes["bm25-1"], cross_encoder_artifact()) as stack:
        yield stack


@pytest.mark.parametrize("fault", FAULTS)
async def test_no_request_fails_while_a_component_dies_and_comes_back(
    drill_stack: DrillStack, fault: Fault
) -> None:
    report = await run_fault(drill_stack, fault, requests=300, down_seconds=2.0, settle_seconds=2.0)
    assert report.failed == 0, report
    assert report.codes == {"OK": report.requests}
    assert report.requests >= 300
    assert report.degraded > 0, "the outage was not seen: the fault did not land mid-run"
    if fault == "redis":  # bypassed, complete answers that say so: the score cache, never the reranker
        assert set(report.degraded_by) == {"score-cache"}, report
    assert report.recovery_s is not None
