"""Faults under load: kill -9 each component mid-run, restart it on its old port, and lose no request.

The stack is operations.fault_drill's (two dense shards, one BM25 shard, the reranker on a real tritonserver
with a real redis-server cache, the gateway), all separate processes; the gateway is never restarted.
A reduced run (300 requests per fault from 16 concurrent clients); bench/loadgen.py runs the full size.
The supervised drills restart nothing themselves: the stack's supervisor brings each component back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model_runtimes.bi_encoder import BiEncoder
from operations.fault_drill import FAULTS, DrillStack, Fault, run_fault
from operations.processes import RestartPolicy
from retriever_service.build_index import build_index
from tests.cross_encoder_support import cross_encoder_artifact, triton_installation_or_skip

pytestmark = pytest.mark.slow


def _drill_stack(indexes: dict[str, Path], encoder: BiEncoder, root: Path, *, supervised: bool) -> DrillStack:
    triton_installation_or_skip()  # the drill starts its own tritonserver
    corpus = indexes["bm25-1"] / "shard-0" / "docs.jsonl"
    dense = build_index(corpus, root / "dense-2", kind="dense", num_shards=2, encoder=encoder)
    policy = RestartPolicy(first_delay=0.5, max_delay=2.0)
    return DrillStack(
        root / "run", dense, indexes["bm25-1"], cross_encoder_artifact(), supervised=supervised,
        restart_policy=policy,
    )  # fmt: skip


@pytest.fixture(scope="module")
def drill_stack(
    indexes: dict[str, Path], encoder: BiEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DrillStack]:
    root = tmp_path_factory.mktemp("fault-drills")
    with _drill_stack(indexes, encoder, root, supervised=False) as stack:
        yield stack


@pytest.fixture(scope="module")
def supervised_stack(
    indexes: dict[str, Path], encoder: BiEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DrillStack]:
    root = tmp_path_factory.mktemp("supervised-drills")
    with _drill_stack(indexes, encoder, root, supervised=True) as stack:
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


@pytest.mark.parametrize("fault", FAULTS)
async def test_the_supervisor_brings_each_component_back_without_the_drill(
    supervised_stack: DrillStack, fault: Fault
) -> None:
    before = supervised_stack.restarts(fault)
    report = await run_fault(supervised_stack, fault, requests=150, settle_seconds=2.0)
    assert report.failed == 0, report
    assert report.degraded > 0, "the outage was not seen: the fault did not land mid-run"
    assert supervised_stack.restarts(fault) == before + 1
    assert report.time_to_recovery_s is not None and report.time_to_recovery_s > 0


async def test_a_restarted_service_that_crashes_again_comes_back_again(supervised_stack: DrillStack) -> None:
    # The second kill lands on the supervisor's replacement process, not the one the stack first started.
    for _ in range(2):
        before = supervised_stack.restarts("reranker")
        report = await run_fault(supervised_stack, "reranker", requests=150, settle_seconds=2.0)
        assert report.failed == 0, report
        assert supervised_stack.restarts("reranker") == before + 1
